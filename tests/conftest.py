"""Fixtures: tiny models and tokenizers built once per session (the builders live in helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

# One thread per torch process, here and in every subprocess a test starts: the suite runs on two xdist
# workers, and torch's default of a thread per core in each process oversubscribes the cores (the suite's
# time with and without: bench/README.md).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import make_arranged_model_dir, make_bert_tokenizer, make_tiny_model_dir, write_squad_json  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-distilbert"))


@pytest.fixture(scope="session")
def bert_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return make_bert_tokenizer(tmp_path_factory.mktemp("bert-tok"))


@pytest.fixture(scope="session")
def distilbert_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return make_bert_tokenizer(tmp_path_factory.mktemp("distilbert-tok"), distilbert=True)


@pytest.fixture(scope="session")
def byte_bpe_tokenizer():
    """A RoBERTa-style byte-level BPE tokenizer trained in the test on a few sentences."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    corpus = [
        "The Denver Broncos won Super Bowl 50 in Santa Clara, California.",
        "Paris is the capital of France and its largest city.",
        "Café crème costs 3 € in Zürich — naïve façade.",
    ] * 20
    backend = ByteLevelBPETokenizer()
    backend.train_from_iterator(
        corpus, vocab_size=400, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    return RobertaTokenizerFast(
        tokenizer_object=backend._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )


@pytest.fixture
def squad_file(tmp_path: Path) -> Path:
    return write_squad_json(tmp_path / "squad.json")


@pytest.fixture(scope="session")
def arranged_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_arranged_model_dir(tmp_path_factory.mktemp("arranged"))
