"""`from qa import pipeline`: transformers 4's question-answering pipeline, called as it was, answering with
this project's reader: every call form and keyword, lists in order, bad input refused before any model
work, the same spans as predict.py, and the same spans as transformers 4.57's pipeline where it is
installed beside (.ci-transformers4, which .ci/run installs, or QA_TRANSFORMERS4_PATH)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO_ROOT, SQUAD_ARTICLES

from qa.commands import predict as predict_cmd
from qa.model.carried import store_carried

CONTEXT = "In 2016 the Denver Broncos won the super bowl."
HF_KEYS = ["score", "start", "end", "answer"]


@pytest.fixture(scope="module")
def qa(arranged_model_dir):
    from qa import pipeline

    return pipeline("question-answering", model=str(arranged_model_dir), device=-1)


def test_import_qa_loads_no_torch_and_the_notebook_cell_runs_with_only_the_import_changed(arranged_model_dir):
    """The notebook's last cells, with `from transformers import pipeline` replaced by `from qa import
    pipeline`, in a fresh interpreter: it prints the answer."""
    cell = (
        "import sys\n"
        "import qa\n"
        "assert 'torch' not in sys.modules, 'import qa loaded torch'\n"
        "from qa import pipeline\n"
        f"qa = pipeline('question-answering', model={str(arranged_model_dir)!r}, device=-1)\n"
        f"context = {CONTEXT!r}\n"
        "question = 'Who won?'\n"
        "print(qa(context=context, question=question))\n"
    )
    done = subprocess.run([sys.executable, "-c", cell], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = eval(done.stdout.strip())  # a dict's repr, as the notebook shows it
    assert list(printed) == HF_KEYS and printed["answer"] == "Denver Broncos"


def test_every_call_form_gives_transformers_4s_answer_objects(qa):
    one = qa(question="Who won?", context=CONTEXT)
    assert list(one) == HF_KEYS
    assert (one["answer"], CONTEXT[one["start"] : one["end"]]) == ("Denver Broncos", "Denver Broncos")
    assert 0 < one["score"] <= 1
    assert qa({"question": "Who won?", "context": CONTEXT}) == one
    assert qa("Who won?", CONTEXT) == one
    listed = qa([{"question": "Who won?", "context": CONTEXT}])
    assert listed == [one]  # a list in, a list out, even of one
    assert qa(question=["Who won?", "Who won?"], context=[CONTEXT, CONTEXT]) == [one, one]
    assert qa(question="Who won?", context=[CONTEXT, CONTEXT]) == [one, one]  # one question, shared


def test_a_list_comes_back_in_its_order(qa):
    contexts = [
        "Denver Broncos won in 2016.",
        "The church was quiet; later the Denver Broncos played.",
        CONTEXT,
        "Nothing here but the Denver river and the Broncos.",
    ]
    answers = qa([{"question": f"Who won {n}?", "context": c} for n, c in enumerate(contexts)])
    assert len(answers) == len(contexts)
    for answer, context in zip(answers, contexts):
        assert context[answer["start"] : answer["end"]] == answer["answer"]
        assert answer["answer"].startswith("Denver")


def test_top_k_passages_min_confidence_and_impossible_answers(qa, arranged_model_dir, tmp_path):
    three = qa(question="Who won?", context=CONTEXT, top_k=3)
    assert isinstance(three, list) and len(three) == 3 and three[0]["answer"] == "Denver Broncos"
    assert [a["score"] for a in three] == sorted((a["score"] for a in three), reverse=True)
    assert sum(a["score"] for a in three) <= 1 + 1e-6  # exclusive answers
    passages = qa(question="Who won?", contexts=["The church was quiet.", CONTEXT])
    assert (passages["answer"], passages["passage"]) == ("Denver Broncos", 1)
    withheld = qa(question="Who won?", context=CONTEXT, min_confidence=1.0)
    assert withheld == {**withheld, "answer": "", "start": 0, "end": 0, "withheld": True}
    # A model that carries a null threshold says "no answer" as transformers 4 did.
    v2_model = tmp_path / "v2"
    shutil.copytree(arranged_model_dir, v2_model)
    store_carried(v2_model, null_threshold=-1e6)  # any null score beats any span
    from qa import pipeline

    abstains = pipeline(model=str(v2_model))(question="Who won?", context=CONTEXT)
    assert {key: abstains[key] for key in ("answer", "start", "end")} == {"answer": "", "start": 0, "end": 0}
    # handle_impossible_answer on a model without a threshold: the null score against the best span's (0),
    # as transformers 4 compared them; a stored threshold always applies.
    from qa.api.arguments import CallOptions
    from qa.api.pipeline import _decode

    assert _decode(CallOptions(handle_impossible_answer=True)).null_threshold == 0.0
    assert _decode(CallOptions()).null_threshold is None
    assert _decode(CallOptions(), stored_threshold=-2.5).null_threshold == -2.5


def test_window_and_answer_length_keywords_change_the_answers(qa):
    long_context = "The people played music in the church. " * 30 + CONTEXT
    default = qa(question="Who won?", context=long_context)
    assert default["answer"] == "Denver Broncos"
    short = qa(question="Who won?", context=long_context, max_seq_len=48, doc_stride=16, batch_size=2)
    assert short["answer"] == "Denver Broncos" and short["start"] == default["start"]
    one_token = qa(question="Who won?", context=CONTEXT, max_answer_len=1, top_k=2)
    assert all(len(answer["answer"].split()) == 1 for answer in one_token)
    with pytest.raises(ValueError, match="max_seq_len 9000 is longer than"):
        qa(question="Who won?", context=CONTEXT, max_seq_len=9000)
    with pytest.raises(ValueError, match="doc_stride"):
        qa(question="Who won?", context=CONTEXT, max_seq_len=48, doc_stride=47)


def test_align_to_words_widens_spans_to_words_and_merges_those_that_become_one():
    from qa.eval.decoding import Candidate, Prediction
    from qa.eval.words import aligned_to_words, widen

    text = "In 1998 near Zurich."
    words = [(0, 2), (3, 7), (8, 12), (13, 19), (19, 20)]
    assert widen(words, 4, 6, text) == (3, 7) and widen(words, 3, 12, text) == (3, 12)
    assert widen(words, 14, 17, text) == (13, 19) and widen(words, 2, 4, text) == (3, 7)  # edge space dropped
    # "99" and "19" both become "1998" (probabilities 0.2 + 0.15), which then outranks "near" (0.3).
    nbest = [
        Candidate("near", 8, 12, score=-1.2, probability=0.3, log_prob=np.log(0.3)),
        Candidate("99", 5, 7, score=-1.6, probability=0.2, log_prob=np.log(0.2)),
        Candidate("", 0, 0, score=-1.7, probability=0.17),  # "no answer": keeps its place
        Candidate("19", 3, 5, score=-1.9, probability=0.15, log_prob=np.log(0.15)),
    ]
    prediction = Prediction("near", 8, 12, score=-1.2, null_score=0.0, log_prob=np.log(0.3), nbest=nbest)
    aligned = aligned_to_words(prediction, words, text).nbest
    assert [(c.text, c.start, c.end) for c in aligned] == [("1998", 3, 7), ("near", 8, 12), ("", 0, 0)]
    assert aligned[0].log_prob == pytest.approx(np.log(0.35)) and aligned[0].score == pytest.approx(
        np.logaddexp(-1.6, -1.9)
    )
    assert prediction.nbest[1].text == "99"  # the reader's own prediction is left as it was


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda qa: qa(context=CONTEXT), ValueError, "question: missing"),
        (lambda qa: qa(question="Who?", context=None), ValueError, "context: missing"),
        (lambda qa: qa(question=3, context=CONTEXT), TypeError, "question: a string is needed"),
        (lambda qa: qa(question="Who?", context=""), ValueError, "context: "),
        (lambda qa: qa(question=" \u200b ", context=CONTEXT), ValueError, "question: "),
        (lambda qa: qa(question="Who?", context=CONTEXT, top_k="3"), TypeError, "top_k: an integer is needed"),
        (lambda qa: qa(question="Who?", context=CONTEXT, top_k=0), ValueError, "top_k: must be at least 1"),
        (lambda qa: qa(question="Who?", context=CONTEXT, topk=2), TypeError, "unknown keyword argument 'topk'"),
        (lambda qa: qa(question="Who?", context=CONTEXT, align_to_words="yes"), TypeError, "align_to_words"),
        (lambda qa: qa(question="Who?", context=CONTEXT, min_confidence=2), ValueError, "min_confidence"),
        (lambda qa: qa([{"question": "Who?", "context": CONTEXT}, {"question": "Who?"}]), ValueError, r"\(item 1\)"),
        (lambda qa: qa([{"question": "Who?", "contex": CONTEXT}]), ValueError, "contex \\(item 0\\): not a field"),
        (lambda qa: qa(question=["a?", "b?"], context=[CONTEXT]), ValueError, "lists of different lengths"),
        (lambda qa: qa([]), ValueError, "empty"),
        (lambda qa: qa(42), TypeError, "a question is a dict"),
    ],
)
def test_bad_input_is_refused_in_one_sentence_before_any_model_work(qa, monkeypatch, call, error, message):
    import qa.eval.answering as answering

    def no_model_work(*args, **kwargs):
        raise AssertionError("the model ran on bad input")

    monkeypatch.setattr(answering, "answer_examples", no_model_work)
    with pytest.raises(error, match=message) as caught:
        call(qa)
    assert "\n" not in str(caught.value)


def test_bad_construction_is_refused_in_one_sentence(arranged_model_dir, tmp_path):
    import torch

    from qa import pipeline

    with pytest.raises(ValueError, match="task: only 'question-answering'"):
        pipeline("summarization", model=str(arranged_model_dir))
    with pytest.raises(TypeError, match="model: a model directory or hub id"):
        pipeline("question-answering")
    with pytest.raises(ValueError, match="no such model directory"):
        pipeline(model=str(tmp_path / "nothing" / "here"))
    with pytest.raises(TypeError, match="unknown keyword argument 'max_length'"):
        pipeline(model=str(arranged_model_dir), max_length=3)
    if torch.cuda.device_count() < 8:
        with pytest.raises(ValueError, match="device=7: this machine has"):
            pipeline(model=str(arranged_model_dir), device=7)
    with pytest.raises(TypeError, match="device: "):
        pipeline(model=str(arranged_model_dir), device=1.5)
    assert (
        pipeline(model=str(arranged_model_dir), device=torch.device("cpu"), top_k=2)("Who won?", CONTEXT)[0]["answer"]
        == "Denver Broncos"
    )  # defaults given when the pipeline is made apply to every call


def _squad_questions():
    return [
        {"question": qa["question"], "context": paragraph["context"]}
        for article in SQUAD_ARTICLES
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_spans_equal_predict_py_at_the_same_settings(tiny_model_dir, tmp_path, capsys, precision):
    """The same reader behind both: the pipeline's spans (words not widened) equal predict.py --input's."""
    from qa import pipeline

    questions = _squad_questions() * 3
    lines = tmp_path / "in.jsonl"
    lines.write_text("\n".join(json.dumps({**q, "top_k": 3}) for q in questions))
    settings = ["--max-length", "48", "--stride", "16", "--max-answer-length", "15", "--precision", precision]
    predict_cmd.main(["--ckpt", str(tiny_model_dir), "--input", str(lines), *settings])
    expected = [json.loads(line)["answers"] for line in capsys.readouterr().out.splitlines()]
    qa = pipeline(model=str(tiny_model_dir), precision=precision)
    found = qa(questions, top_k=3, max_seq_len=48, doc_stride=16, align_to_words=False)
    assert [[(a["answer"], a["start"], a["score"]) for a in q] for q in found] == [
        [(a["answer"], a["start"], a["score"]) for a in q] for q in expected
    ]


# transformers 4.57 in a directory of its own (`pip install --target`): .ci/run installs it at .ci-transformers4
TRANSFORMERS_4 = os.environ.get("QA_TRANSFORMERS4_PATH") or (
    str(REPO_ROOT / ".ci-transformers4") if (REPO_ROOT / ".ci-transformers4" / "transformers").is_dir() else None
)


@pytest.mark.slow
@pytest.mark.skipif(
    not TRANSFORMERS_4,
    reason="transformers 4.57 is not installed beside: pip install --target .ci-transformers4 'transformers==4.57.*'",
)
def test_spans_equal_transformers_4s_pipeline(tmp_path):
    """transformers 4.57's own pipeline, in a subprocess whose path puts it first, on a small BERT QA model
    trained here for a few steps: the same spans at its defaults and at max_answer_len=30 (fp32)."""
    from helpers import make_tiny_model_dir

    from qa import pipeline

    model = make_tiny_model_dir(tmp_path / "model", seed=3)
    questions = _squad_questions() * 2
    script = (
        "import json, sys\n"
        "import transformers\n"
        "assert transformers.__version__.startswith('4.57'), transformers.__version__\n"
        "from transformers import pipeline\n"
        f"qa = pipeline('question-answering', model={str(model)!r}, device=-1)\n"
        f"questions = json.loads({json.dumps(json.dumps(questions))})\n"
        "out = [qa(questions, max_answer_len=m) for m in (15, 30)]\n"
        "print(json.dumps(out))\n"
    )
    environment = {**os.environ, "PYTHONPATH": TRANSFORMERS_4}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout.splitlines()[-1])
    qa = pipeline(model=str(model), precision="fp32")
    for max_answer_len, expected in zip((15, 30), theirs):
        ours = qa(questions, max_answer_len=max_answer_len)
        assert [(a["start"], a["end"], a["answer"]) for a in ours] == [
            (a["start"], a["end"], a["answer"]) for a in expected
        ]
