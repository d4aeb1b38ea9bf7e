import random

import pytest

from qa.config.settings import WindowSettings
from qa.data.features import covering_token_span, prepare_eval_features, prepare_train_features

LONG_CONTEXT = (
    "The city of Paris was founded on the river Seine. " * 3
    + "The Denver Broncos won Super Bowl 50 in 2016. "
    + "Many people played music in the church of the university. " * 4
)


def examples_for(context, question, answer_text, occurrence=0):
    start = -1
    for _ in range(occurrence + 1):
        start = context.index(answer_text, start + 1)
    return {
        "id": ["e0"],
        "question": [question],
        "context": [context],
        "answers": [{"text": [answer_text], "answer_start": [start]}],
    }


def label_texts(features, examples, tokenizer, max_length, stride):
    """Text under each non-CLS label, recomputed from a plain tokenizer call."""
    encoded = tokenizer(
        [q.strip() for q in examples["question"]],
        examples["context"],
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    texts = []
    for window, (start, end) in enumerate(zip(features["start_positions"], features["end_positions"])):
        context = examples["context"][encoded["overflow_to_sample_mapping"][window]]
        offsets = encoded["offset_mapping"][window]
        texts.append(None if start == end == 0 else context[offsets[start][0] : offsets[end][1]])
    return encoded, texts


def test_windows_follow_the_tokenizer_overflow_order_and_label_the_answer(bert_tokenizer):
    examples = examples_for(LONG_CONTEXT, "Who won Super Bowl 50?", "Denver Broncos")
    features = prepare_train_features(examples, bert_tokenizer, WindowSettings(48, 16))
    encoded, texts = label_texts(features, examples, bert_tokenizer, 48, 16)
    assert features["input_ids"] == encoded["input_ids"]
    assert len(features["input_ids"]) > 3
    assert set(features) == {"input_ids", "token_type_ids", "start_positions", "end_positions", "example_index"}
    assert features["example_index"] == encoded["overflow_to_sample_mapping"]
    labelled = [text for text in texts if text is not None]
    # Windows overlap, so more than one may hold the whole answer; the others point at CLS.
    assert labelled and all(text == "Denver Broncos" for text in labelled)
    assert None in texts


def test_answer_boundary_inside_a_token_gets_the_covering_token(bert_tokenizer):
    context = "Paris was founded and the team won the game."
    assert "won" in bert_tokenizer.tokenize(context)  # one token in this vocabulary
    start = context.index("won") + 1
    examples = {
        "id": ["e"],
        "question": ["What?"],
        "context": [context],
        "answers": [{"text": ["on"], "answer_start": [start]}],
    }  # the "on" of "won"
    features = prepare_train_features(examples, bert_tokenizer, WindowSettings(64, 16))
    _, texts = label_texts(features, examples, bert_tokenizer, 64, 16)
    assert texts == ["won"]
    assert 0 < features["start_positions"][0] == features["end_positions"][0]


def test_answer_with_surrounding_white_space_is_labelled_on_its_text(bert_tokenizer):
    context = "The team won the game in Paris last year."
    start = context.index(" Paris ")
    examples = {
        "id": ["e"],
        "question": ["Where?"],
        "context": [context],
        "answers": [{"text": [" Paris "], "answer_start": [start]}],
    }
    features = prepare_train_features(examples, bert_tokenizer, WindowSettings(64, 16))
    _, texts = label_texts(features, examples, bert_tokenizer, 64, 16)
    assert texts == ["Paris"]


def test_random_answers_always_get_valid_covering_labels(bert_tokenizer):
    rng = random.Random(0)
    questions, contexts, answers = [], [], []
    for _ in range(40):
        context = LONG_CONTEXT[rng.randrange(0, 100) :]
        start = rng.randrange(0, len(context) - 20)
        end = start + rng.randrange(1, 15)
        while context[start].isspace():
            start += 1
        while context[end - 1].isspace():
            end -= 1
        questions.append("What was played ?")
        contexts.append(context)
        answers.append({"text": [context[start:end]], "answer_start": [start]})
    examples = {"id": [str(i) for i in range(40)], "question": questions, "context": contexts, "answers": answers}
    features = prepare_train_features(examples, bert_tokenizer, WindowSettings(40, 12))
    encoded, texts = label_texts(features, examples, bert_tokenizer, 40, 12)
    labelled = 0
    for window, (start, end) in enumerate(zip(features["start_positions"], features["end_positions"])):
        assert start <= end
        if start == end == 0:
            continue
        labelled += 1
        sequence_ids = encoded.sequence_ids(window)
        assert sequence_ids[start] == 1 and sequence_ids[end] == 1
        example = encoded["overflow_to_sample_mapping"][window]
        gold = answers[example]["text"][0]
        # The label covers the answer, and is the smallest span that does.
        assert gold.lower() in texts[window].lower() or gold in texts[window]
        offsets = encoded["offset_mapping"][window]
        gold_start = answers[example]["answer_start"][0]
        assert offsets[start][0] <= gold_start < offsets[start][1]
        assert offsets[end][0] < gold_start + len(gold) <= offsets[end][1]
    assert labelled >= 40


def test_distilbert_gets_no_token_type_ids(distilbert_tokenizer):
    examples = examples_for(LONG_CONTEXT, "Who won?", "Denver Broncos")
    features = prepare_train_features(examples, distilbert_tokenizer, WindowSettings(48, 16))
    assert "token_type_ids" not in features
    assert "token_type_ids" not in prepare_eval_features(examples, distilbert_tokenizer, WindowSettings(48, 16))


def test_questions_are_stripped(bert_tokenizer):
    padded = examples_for(LONG_CONTEXT, "   Who won Super Bowl 50?  \n", "Denver Broncos")
    plain = examples_for(LONG_CONTEXT, "Who won Super Bowl 50?", "Denver Broncos")
    assert prepare_train_features(padded, bert_tokenizer, WindowSettings(48, 16)) == prepare_train_features(
        plain, bert_tokenizer, WindowSettings(48, 16)
    )


def test_too_long_question_is_cut_instead_of_failing(bert_tokenizer):
    question = "what " * 200 + "won?"
    examples = examples_for(LONG_CONTEXT, question, "Denver Broncos")
    features = prepare_train_features(examples, bert_tokenizer, WindowSettings(96, 16, 20))
    encoded, texts = label_texts(
        features,
        {**examples, "question": ["what " * 20]},
        bert_tokenizer,
        96,
        16,
    )
    assert features["input_ids"] == encoded["input_ids"]
    assert "Denver Broncos" in texts


def test_left_padding_tokenizer_puts_context_first(tmp_path):
    from helpers import make_bert_tokenizer

    tokenizer = make_bert_tokenizer(tmp_path)
    tokenizer.padding_side = "left"
    examples = examples_for(LONG_CONTEXT, "Who won Super Bowl 50?", "Denver Broncos")
    features = prepare_train_features(examples, tokenizer, WindowSettings(48, 16))
    encoded = tokenizer(
        examples["context"],
        ["Who won Super Bowl 50?"],
        truncation="only_first",
        max_length=48,
        stride=16,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    assert features["input_ids"] == encoded["input_ids"]
    found = []
    for window, (start, end) in enumerate(zip(features["start_positions"], features["end_positions"])):
        if start == end == 0:
            continue
        assert encoded.sequence_ids(window)[start] == 0
        offsets = encoded["offset_mapping"][window]
        found.append(LONG_CONTEXT[offsets[start][0] : offsets[end][1]])
    assert found and set(found) == {"Denver Broncos"}
    eval_features = prepare_eval_features(examples, tokenizer, WindowSettings(48, 16))
    for window, offsets in enumerate(eval_features["offset_mapping"]):
        sequence_ids = encoded.sequence_ids(window)
        assert [offset is not None for offset in offsets] == [sid == 0 for sid in sequence_ids]


def test_byte_level_bpe_with_unicode_labels_cover_the_answer(byte_bpe_tokenizer):
    context = "Café crème costs 3 € in Zürich — naïve façade. " * 6
    examples = examples_for(context, "Where?", "Zürich", occurrence=4)
    features = prepare_train_features(examples, byte_bpe_tokenizer, WindowSettings(40, 10))
    encoded = byte_bpe_tokenizer(
        ["Where?"],
        [context],
        truncation="only_second",
        max_length=40,
        stride=10,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    found = 0
    for window, (start, end) in enumerate(zip(features["start_positions"], features["end_positions"])):
        cls_index = encoded["input_ids"][window].index(byte_bpe_tokenizer.cls_token_id)
        assert start <= end
        if start == end == cls_index:
            continue
        found += 1
        offsets = encoded["offset_mapping"][window]
        assert encoded.sequence_ids(window)[start] == 1
        assert "Zürich" in context[offsets[start][0] : offsets[end][1]]
    assert found >= 1


def test_eval_features_keep_offsets_only_inside_the_context(bert_tokenizer):
    examples = examples_for(LONG_CONTEXT, "Who won?", "Denver Broncos")
    examples["id"] = ["the-id"]
    features = prepare_eval_features(examples, bert_tokenizer, WindowSettings(48, 16))
    assert set(features) == {"input_ids", "token_type_ids", "example_id", "offset_mapping"}
    assert len(features["example_id"]) > 1 and set(features["example_id"]) == {"the-id"}
    for ids, offsets, types in zip(features["input_ids"], features["offset_mapping"], features["token_type_ids"]):
        assert len(ids) == len(offsets)
        assert [offset is not None for offset in offsets] == [
            t == 1 and i != bert_tokenizer.sep_token_id for t, i in zip(types, ids)
        ]


@pytest.mark.parametrize(
    ("offsets", "answer", "expected"),
    [
        ([(0, 0), (0, 3), (4, 8), (8, 10), (0, 0)], (4, 10), (2, 3)),
        ([(0, 0), (0, 3), (4, 8), (8, 10), (0, 0)], (5, 9), (2, 3)),
        # two byte pieces of one character share their offsets: cover both
        ([(0, 0), (0, 3), (4, 5), (4, 5), (5, 9), (0, 0)], (4, 5), (2, 3)),
        ([(0, 0), (0, 3), (4, 8), (0, 0)], (2, 12), None),
    ],
)
def test_covering_token_span(offsets, answer, expected):
    context_spans = [None, *offsets[1:-1], None]
    assert covering_token_span(context_spans, *answer) == expected


# ---------------------------------------------------------------- traps other QA libraries fall into


def test_an_answer_at_the_very_first_context_token_is_labelled_there(bert_tokenizer):
    context = "Denver won the game in the city of Paris."
    examples = examples_for(context, "Who won?", "Denver")
    features = prepare_train_features(examples, bert_tokenizer, WindowSettings(64, 16))
    _, texts = label_texts(features, examples, bert_tokenizer, 64, 16)
    assert texts == ["Denver"]
    sequence = bert_tokenizer("Who won?", context)
    first_context_token = sequence.sequence_ids().index(1)
    assert features["start_positions"][0] == features["end_positions"][0] == first_context_token


def test_a_span_that_would_cross_a_window_end_is_labelled_only_in_a_window_that_holds_all_of_it(bert_tokenizer):
    words = "the king of the city played music in the church of the school " * 3
    for end in range(30, 60):  # slide the answer across the first window's end
        context = words + "denver broncos won"
        cut = len(" ".join(context.split()[:end]))
        context = context[:cut] + " denver broncos " + context[cut:]
        examples = examples_for(context, "Who?", "denver broncos")
        features = prepare_train_features(examples, bert_tokenizer, WindowSettings(32, 8))
        _, texts = label_texts(features, examples, bert_tokenizer, 32, 8)
        assert any(text == "denver broncos" for text in texts)
        assert all(text in (None, "denver broncos") for text in texts)  # never half an answer


@pytest.mark.slow
def test_a_roberta_style_model_trains_and_answers_with_offsets_that_slice_the_context(byte_bpe_tokenizer, tmp_path):
    import json

    from transformers import RobertaConfig, RobertaForQuestionAnswering

    from qa.commands import predict as predict_cmd
    from qa.commands import train as train_cmd

    model_dir = tmp_path / "roberta"
    byte_bpe_tokenizer.save_pretrained(model_dir)
    config = RobertaConfig(
        vocab_size=len(byte_bpe_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        type_vocab_size=1,  # one token type: token_type_ids all zero, sequence_ids mark the context
        pad_token_id=byte_bpe_tokenizer.pad_token_id,
    )
    RobertaForQuestionAnswering(config).save_pretrained(model_dir)
    context = "The Denver Broncos won Super Bowl 50 in Santa Clara, California."
    rows = [
        {
            "id": f"q{i}",
            "question": "Who won Super Bowl 50?",
            "context": context,
            "answers": {"text": ["Denver Broncos"], "answer_start": [context.index("Denver Broncos")]},
        }
        for i in range(8)
    ]
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows))
    out = tmp_path / "out"
    train_cmd.main(
        ["--model", str(model_dir), "--train-file", str(data), "--output-dir", str(out), "--max-length", "64"]
        + ["--stride", "16", "--max-steps", "8", "--lr", "5e-3", "--batch-size", "4", "--no-eval", "--no-progress"]
        + ["--cache-dir", str(tmp_path / "cache")]
    )
    answers = predict_cmd.main(["--ckpt", str(out), "--question", "Who won?", "--context", context, "--top-k", "5"])
    for answer in answers[0]:
        assert context[answer["start"] : answer["end"]] == answer["answer"]
        assert not answer["answer"].startswith(" ")  # BPE's leading-space tokens do not leak into answers
    assert len({(a["start"], a["end"]) for a in answers[0]}) == 5


def test_training_windows_record_their_example_across_tokenising_chunks(bert_tokenizer, monkeypatch):
    import qa.data.windows as windows_module

    monkeypatch.setattr(windows_module, "CHUNK_EXAMPLES", 2)  # three chunks for five examples
    contexts = [LONG_CONTEXT if index % 2 else "The Denver Broncos won." for index in range(5)]
    columns = {
        "id": [f"e{index}" for index in range(5)],
        "question": ["Who won?"] * 5,
        "context": contexts,
        "answers": [{"text": ["Denver Broncos"], "answer_start": [c.index("Denver Broncos")]} for c in contexts],
    }
    windows = windows_module.build_train_windows(columns, bert_tokenizer, WindowSettings(48, 16))
    per_example = [
        len(
            prepare_train_features(
                {k: v[i : i + 1] for k, v in columns.items()}, bert_tokenizer, WindowSettings(48, 16)
            )["input_ids"]
        )
        for i in range(5)
    ]
    assert windows.window_example.tolist() == [i for i, count in enumerate(per_example) for _ in range(count)]
