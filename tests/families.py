"""Tiny models of every encoder family the tool claims, each with a tokenizer of its family's kind.

Nothing is downloaded: a WordPiece, byte-level BPE or Unigram (SentencePiece-style) vocabulary is
trained with the `tokenizers` library on a few hundred generated sentences and handed to the
family's own tokenizer class, which builds the family's normaliser, pre-tokeniser, post-processor
and offsets as it does for the real checkpoints. The model is a 2-layer, 32-wide random model of the
family. `make_family_model(name, directory)` saves both like a checkpoint; `FAMILIES` names them.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import SQUAD_ARTICLES, WORDS

# Sentences with what trips offsets: accents, symbols, digits, punctuation, double spaces.
_SPECIAL_SENTENCES = [
    "Café crème costs 3 € in Zürich — a naïve façade.",
    "In 1998 near Zürich, the Ökonom met Søren at the Hôtel.",
    "The Denver Broncos won Super Bowl 50 in Santa Clara, California.",
    "Paris is the capital of France and its largest city.",
]
WIDTH = 32  # hidden size of every tiny model


def corpus(size: int = 300, seed: int = 0) -> list[str]:
    """A few hundred sentences: the test articles' contexts, the special sentences, and random word strings."""
    rng = random.Random(seed)
    contexts = [paragraph["context"] for article in SQUAD_ARTICLES for paragraph in article["paragraphs"]]
    words = list(WORDS) + ["Paris", "France", "Denver", "Broncos", "Seine", "Zürich", "1998", "2016", "50"]
    generated = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 15))) + "." for _ in range(size)]
    return (contexts + _SPECIAL_SENTENCES) * 5 + generated


def _train(
    model: Any, trainer: Any, texts: list[str] | None, pre_tokenizer: Any = None, normalizer: Any = None
) -> dict:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer(model)
    if pre_tokenizer is not None:
        tokenizer.pre_tokenizer = pre_tokenizer
    if normalizer is not None:
        tokenizer.normalizer = normalizer
    tokenizer.train_from_iterator(texts or corpus(), trainer=trainer)
    return json.loads(tokenizer.to_str())["model"]


def wordpiece_vocab(specials: list[str], lowercase: bool, texts: list[str] | None = None) -> dict[str, int]:
    from tokenizers import models, normalizers, pre_tokenizers, trainers

    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    trainer = trainers.WordPieceTrainer(vocab_size=600, special_tokens=specials)
    model = models.WordPiece(unk_token="[UNK]")
    return _train(model, trainer, texts, pre_tokenizers.BertPreTokenizer(), normalizer)["vocab"]


def byte_bpe_vocab(specials: list[str], texts: list[str] | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    from tokenizers import models, pre_tokenizers, trainers

    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    trained = _train(models.BPE(), trainer, texts, pre_tokenizers.ByteLevel(add_prefix_space=False))
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in trained["merges"]]
    return trained["vocab"], merges


def unigram_vocab(specials: list[str], texts: list[str] | None = None) -> list[tuple[str, float]]:
    """SentencePiece-style pieces (``▁`` marks a word start) with the specials first, in the family's order."""
    from tokenizers import models, pre_tokenizers, trainers

    trainer = trainers.UnigramTrainer(vocab_size=500, special_tokens=specials, unk_token=specials[0])
    pieces = _train(models.Unigram(), trainer, texts, pre_tokenizers.Metaspace())["vocab"]
    learned = [(piece, score) for piece, score in pieces if piece not in specials]
    return [(special, 0.0) for special in specials] + [(piece, float(score)) for piece, score in learned]


@dataclass(frozen=True)
class Family:
    name: str
    tokenizer: Any  # (texts or None) -> a tokenizer of the family's kind, trained on texts
    model: Any  # (tokenizer) -> a tiny random QA model
    limit_offset: int = 0  # positions the model keeps for itself (padding-offset position ids)


def _bert_like(tokenizer_class: str, specials: list[str], lowercase: bool = False, **options: Any) -> Any:
    def build(texts: list[str] | None = None) -> Any:
        import transformers

        vocab = wordpiece_vocab(specials, lowercase, texts)
        return getattr(transformers, tokenizer_class)(vocab=vocab, do_lower_case=lowercase, **options)

    return build


def _byte_bpe(tokenizer_class: str, specials: list[str], **options: Any) -> Any:
    def build(texts: list[str] | None = None) -> Any:
        import transformers

        vocab, merges = byte_bpe_vocab(specials, texts)
        return getattr(transformers, tokenizer_class)(vocab=vocab, merges=merges, **options)

    return build


def _unigram(tokenizer_class: str, specials: list[str], **options: Any) -> Any:
    def build(texts: list[str] | None = None) -> Any:
        import transformers

        return getattr(transformers, tokenizer_class)(vocab=unigram_vocab(specials, texts), **options)

    return build


def _modernbert_tokenizer(texts: list[str] | None = None) -> Any:
    """ModernBERT ships a byte-level BPE (OLMo's) in a plain PreTrainedTokenizerFast with a CLS/SEP template:
    no trimming of offsets, so a word's offsets include the space before it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    vocab, merges = byte_bpe_vocab(specials, texts)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    from tokenizers import decoders

    backend.decoder = decoders.ByteLevel()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "attention_mask"],
    )


def _model(config_class: str, model_class: str, **options: Any) -> Any:
    def build(tokenizer: Any) -> Any:
        import torch
        import transformers

        torch.manual_seed(0)
        config = getattr(transformers, config_class)(vocab_size=len(tokenizer), **options)
        config.pad_token_id = tokenizer.pad_token_id
        return getattr(transformers, model_class)(config)

    return build


_BERT_SIZE = {"hidden_size": WIDTH, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
POSITIONS = 256  # position embeddings of the tiny models (RoBERTa-style ones get 2 more, for their offset)

FAMILIES: dict[str, Family] = {
    "bert": Family(
        "bert",
        _bert_like("BertTokenizer", _BERT_SPECIALS),
        _model("BertConfig", "BertForQuestionAnswering", max_position_embeddings=POSITIONS, **_BERT_SIZE),
    ),
    "bert-left-padding": Family(
        "bert-left-padding",
        _bert_like("BertTokenizer", _BERT_SPECIALS, padding_side="left"),
        _model("BertConfig", "BertForQuestionAnswering", max_position_embeddings=POSITIONS, **_BERT_SIZE),
    ),
    "distilbert": Family(
        "distilbert",
        _bert_like("DistilBertTokenizer", _BERT_SPECIALS),
        _model(
            "DistilBertConfig",
            "DistilBertForQuestionAnswering",
            dim=WIDTH,
            hidden_dim=64,
            n_layers=2,
            n_heads=2,
            max_position_embeddings=POSITIONS,
        ),
    ),
    "electra": Family(
        "electra",
        _bert_like("ElectraTokenizer", _BERT_SPECIALS, lowercase=True),
        _model(
            "ElectraConfig",
            "ElectraForQuestionAnswering",
            embedding_size=16,
            max_position_embeddings=POSITIONS,
            **_BERT_SIZE,
        ),
    ),
    "mpnet": Family(
        "mpnet",
        _bert_like("MPNetTokenizer", ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"], lowercase=True),
        _model("MPNetConfig", "MPNetForQuestionAnswering", max_position_embeddings=POSITIONS + 2, **_BERT_SIZE),
        limit_offset=2,
    ),
    "roberta": Family(
        "roberta",
        _byte_bpe("RobertaTokenizer", _ROBERTA_SPECIALS),
        _model(
            "RobertaConfig",
            "RobertaForQuestionAnswering",
            max_position_embeddings=POSITIONS + 2,
            type_vocab_size=1,
            **_BERT_SIZE,
        ),
        limit_offset=2,
    ),
    "longformer": Family(
        "longformer",
        _byte_bpe("LongformerTokenizer", _ROBERTA_SPECIALS),
        _model(
            "LongformerConfig",
            "LongformerForQuestionAnswering",
            max_position_embeddings=POSITIONS + 2,
            attention_window=16,
            type_vocab_size=1,
            **_BERT_SIZE,
        ),
        limit_offset=2,
    ),
    "deberta": Family(
        "deberta",
        _byte_bpe("DebertaTokenizer", ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]),
        _model(
            "DebertaConfig",
            "DebertaForQuestionAnswering",
            max_position_embeddings=POSITIONS,
            relative_attention=True,
            pos_att_type=["c2p", "p2c"],
            type_vocab_size=0,
            **_BERT_SIZE,
        ),
    ),
    "deberta-v2": Family(
        "deberta-v2",
        _unigram("DebertaV2Tokenizer", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
        _model(
            "DebertaV2Config",
            "DebertaV2ForQuestionAnswering",
            max_position_embeddings=POSITIONS,
            relative_attention=True,
            position_buckets=64,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            type_vocab_size=0,
            **_BERT_SIZE,
        ),
    ),
    "xlm-roberta": Family(
        "xlm-roberta",
        _unigram("XLMRobertaTokenizer", ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]),
        _model(
            "XLMRobertaConfig",
            "XLMRobertaForQuestionAnswering",
            max_position_embeddings=POSITIONS + 2,
            type_vocab_size=1,
            **_BERT_SIZE,
        ),
        limit_offset=2,
    ),
    "albert": Family(
        "albert",
        _unigram("AlbertTokenizer", ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]),
        _model(
            "AlbertConfig",
            "AlbertForQuestionAnswering",
            embedding_size=16,
            max_position_embeddings=POSITIONS,
            **_BERT_SIZE,
        ),
    ),
    "bigbird": Family(
        "bigbird",
        _unigram("BigBirdTokenizer", ["<unk>", "<s>", "</s>", "<pad>", "[SEP]", "[MASK]", "[CLS]"]),
        _model(
            "BigBirdConfig",
            "BigBirdForQuestionAnswering",
            max_position_embeddings=POSITIONS,
            attention_type="original_full",
            **_BERT_SIZE,
        ),
    ),
    "modernbert": Family(
        "modernbert",
        _modernbert_tokenizer,
        _model(
            "ModernBertConfig",
            "ModernBertForQuestionAnswering",
            max_position_embeddings=POSITIONS,
            local_attention=16,
            global_attn_every_n_layers=2,
            hidden_size=WIDTH,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        ),
    ),
    "xlnet": Family(
        "xlnet",
        _unigram("XLNetTokenizer", ["<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>"]),
        _model("XLNetConfig", "XLNetForQuestionAnsweringSimple", d_model=WIDTH, n_layer=2, n_head=2, d_inner=64),
    ),
}


def make_family_tokenizer(name: str, texts: list[str] | None = None) -> Any:
    """A tokenizer of family ``name`` trained on ``texts`` (default: `corpus()`)."""
    return FAMILIES[name].tokenizer(texts)


def make_family_model(name: str, directory: Path) -> Path:
    """Save a tiny random QA model of family ``name`` with its tokenizer into ``directory``."""
    family = FAMILIES[name]
    tokenizer = family.tokenizer()
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(directory)
    family.model(tokenizer).save_pretrained(directory)
    return directory
