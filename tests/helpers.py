"""Shared test helpers: tiny models and tokenizers built inside the tests (nothing is downloaded) and SQuAD files."""

from __future__ import annotations

import json
import os
import signal
import string
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


WORDS = (
    "the a an of in on at to is was were by for and with from as that which who what when where why how "
    "did does do many much year city river country born capital called name named first largest built "
    "people king queen war university school church music team game won lost played founded located "
    "paris france london england berlin germany denver broncos panthers super bowl new york river nile "
    "water north south east west million thousand hundred"
).split()


def write_wordpiece_vocab(path: Path, lowercase: bool = True) -> Path:
    """A WordPiece vocabulary that can spell any ASCII text: whole words, then single characters."""
    characters = string.ascii_lowercase + string.digits + string.punctuation
    if not lowercase:
        characters += string.ascii_uppercase
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += sorted(set(WORDS))
    tokens += list(characters) + [f"##{character}" for character in string.ascii_lowercase + string.digits]
    if not lowercase:
        tokens += [f"##{character}" for character in string.ascii_uppercase]
    path.write_text("\n".join(dict.fromkeys(tokens)) + "\n")
    return path


def make_bert_tokenizer(directory: Path, distilbert: bool = False, lowercase: bool = True):
    from transformers import BertTokenizer, DistilBertTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    vocab = write_wordpiece_vocab(directory / "vocab.txt", lowercase=lowercase)
    tokenizer_class = DistilBertTokenizer if distilbert else BertTokenizer
    return tokenizer_class(vocab=str(vocab), do_lower_case=lowercase)


def make_tiny_model_dir(directory: Path, seed: int = 0, positions: int = 512) -> Path:
    """A 2-layer, 32-wide DistilBERT QA model (``positions`` long windows at most) with its tokenizer,
    saved like a real checkpoint."""
    import torch
    from transformers import DistilBertConfig, DistilBertForQuestionAnswering

    tokenizer = make_bert_tokenizer(directory, distilbert=True)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size,
        dim=32,
        hidden_dim=64,
        n_layers=2,
        n_heads=2,
        max_position_embeddings=positions,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = DistilBertForQuestionAnswering(config)
    model.save_pretrained(directory)
    return directory


SQUAD_ARTICLES = [
    {
        "title": "Paris",
        "paragraphs": [
            {
                "context": "Paris is the capital of France. It was founded in the 3rd century BC on the river Seine.",
                "qas": [
                    {
                        "id": "p1",
                        "question": "What is the capital of France?",
                        "answers": [{"text": "Paris", "answer_start": 0}],
                    },
                    {
                        "id": "p2",
                        "question": " On which river is Paris? ",
                        "answers": [
                            {"text": "Seine", "answer_start": 82},
                            {"text": "the river Seine", "answer_start": 72},
                        ],
                    },
                ],
            }
        ],
    },
    {
        "title": "Football",
        "paragraphs": [
            {
                "context": "The Denver Broncos won Super Bowl 50. The game was played in 2016 in Santa Clara.",
                "qas": [
                    {
                        "id": "f1",
                        "question": "Who won Super Bowl 50?",
                        "answers": [{"text": "Denver Broncos", "answer_start": 4}],
                    },
                    {
                        "id": "f2",
                        "question": "When was the game played?",
                        "answers": [{"text": "2016", "answer_start": 61}],
                    },
                ],
            }
        ],
    },
]


def write_squad_json(path: Path, articles: list | None = None) -> Path:
    path.write_text(json.dumps({"version": "1.1", "data": articles if articles is not None else SQUAD_ARTICLES}))
    return path


def make_arranged_model_dir(directory: Path, start_word: str = "denver", end_word: str = "broncos") -> Path:
    """A tiny DistilBERT QA model whose logits pick the span from ``start_word`` to ``end_word``.

    Every layer's attention and feed-forward outputs are zeroed, so each hidden
    state is its (layer-normalised) token embedding; the start word's embedding
    lies on dimensions 0-1 and the end word's on 2-3, which no other token uses,
    and the QA head reads those dimensions. So wherever the two words appear the
    model answers "start_word ... end_word", in whichever window they fall.
    """
    import torch

    make_tiny_model_dir(directory)
    from transformers import AutoTokenizer, DistilBertForQuestionAnswering

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = DistilBertForQuestionAnswering.from_pretrained(directory)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        embeddings = torch.randn(model.config.vocab_size, model.config.dim, generator=generator)
        embeddings[:, :4] = 0
        embeddings[:, 4:] -= embeddings[:, 4:].mean(dim=1, keepdim=True)
        start_id, end_id = tokenizer.convert_tokens_to_ids([start_word, end_word])
        embeddings[start_id] = 0
        embeddings[start_id, :2] = torch.tensor([10.0, -10.0])
        embeddings[end_id] = 0
        embeddings[end_id, 2:4] = torch.tensor([10.0, -10.0])
        model.distilbert.embeddings.word_embeddings.weight.copy_(embeddings)
        model.distilbert.embeddings.position_embeddings.weight.zero_()
        for layer in model.distilbert.transformer.layer:
            layer.attention.out_lin.weight.zero_()
            layer.attention.out_lin.bias.zero_()
            layer.ffn.lin2.weight.zero_()
            layer.ffn.lin2.bias.zero_()
        head = torch.zeros_like(model.qa_outputs.weight)
        head[0, :2] = torch.tensor([1.0, -1.0])
        head[1, 2:4] = torch.tensor([1.0, -1.0])
        model.qa_outputs.weight.copy_(head)
        model.qa_outputs.bias.zero_()
    model.save_pretrained(directory)
    return directory


def tiny_train_argv(model: Path, out: Path, cache_dir: Path, *extra: str, train_file: Path | None = None) -> list[str]:
    """train.py flags for a tiny model: 48-token windows, stride 16, no progress bars, a test-local cache."""
    argv = ["--model", str(model), "--output-dir", str(out), "--max-length", "48", "--stride", "16"]
    argv += ["--cache-dir", str(cache_dir), "--no-progress"]
    if train_file is not None:
        argv += ["--train-file", str(train_file)]
    return [*argv, *extra]


def train_log(out: Path) -> list[dict]:
    """The records of a run's train_log.jsonl: logging intervals and evaluations."""
    return [json.loads(line) for line in (Path(out) / "train_log.jsonl").read_text().splitlines()]


def losses_of(out: Path) -> list[float]:
    """The mean loss of every logging interval of a run."""
    return [row["loss"] for row in train_log(out) if "loss" in row]


# train.py in a child that parks itself (waits for a signal) right after checkpoint-STEP is on disk, so that
# a SIGKILL lands at a known point instead of racing a poll against a fast run.
PARK_AFTER_CHECKPOINT = """
import signal, sys
import qa.train.loop
from qa.commands import train as train_cmd

save = qa.train.loop.save_checkpoint

def save_then_park(output_dir, step, *args, **kwargs):
    path = save(output_dir, step, *args, **kwargs)
    if step == int(sys.argv[1]):
        print("parked", flush=True)
        signal.pause()
    return path

qa.train.loop.save_checkpoint = save_then_park
train_cmd.main(sys.argv[2:])
"""


def sigkill_after_checkpoint(step: int, train_argv: list[str]) -> None:
    """Run train.py ``train_argv`` until checkpoint-``step`` is written, then SIGKILL it."""
    command = [sys.executable, "-c", PARK_AFTER_CHECKPOINT, str(step), *train_argv]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout.readline() == "parked\n"
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


def torchrun(script: str, *args: str, processes: int = 2) -> subprocess.CompletedProcess:
    """``script`` (train.py, evaluate.py, predict.py) under torchrun on this machine's CPUs, one thread per
    process; --standalone takes a free port, so two suites on one machine do not collide."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return subprocess.run(
        [*command, script, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
