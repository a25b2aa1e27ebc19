"""Prompt variants: the 56 label exclusions are exactly the subsets of size 1-4; answer parsing."""

import itertools

import pytest

from mllm_probe.emotion.prompts import (
    LABELS,
    answer_text,
    parse_answer,
    prompt_text,
    variants,
)


def test_variants_are_exactly_the_subsets_of_size_1_to_4():
    vs = variants()
    assert len(vs) == 57 and [v.index for v in vs] == list(range(57))
    assert vs[0].forbidden == () and vs[0].allowed == LABELS
    perturbed = [frozenset(v.forbidden) for v in vs[1:]]
    expected = {frozenset(c) for k in (1, 2, 3, 4) for c in itertools.combinations(LABELS, k)}
    assert len(perturbed) == len(set(perturbed)) == 56 == 6 + 15 + 20 + 15
    assert set(perturbed) == expected
    for v in vs:
        assert set(v.allowed) | set(v.forbidden) == set(LABELS)
        assert not set(v.allowed) & set(v.forbidden) and len(v.allowed) >= 2


def test_prompt_text_names_allowed_and_forbidden_labels():
    vs = variants()
    base = prompt_text(vs[0])
    assert "Do not answer" not in base and '[{"emotion": "<label>"}]' in base
    v = next(v for v in vs if v.forbidden == ("angry", "fear"))
    text = prompt_text(v)
    assert "Choose one of: disgust, happy, neutral, sad." in text
    assert "Do not answer angry, fear." in text
    assert answer_text("sad") == '[{"emotion": "sad"}]'


@pytest.mark.parametrize("text, allowed, expected", [
    ('[{"emotion": "happy"}]', LABELS, ("happy", "ok")),
    ('Sure! [{"emotion": "Neutral"}] done', LABELS, ("neutral", "ok")),
    ('{"emotion": "sad"}', LABELS, ("sad", "ok")),
    ('[{"emotion": "angry"}]', ("sad", "happy"), ("angry", "forbidden_label")),
    ('[{"emotion": "bored"}]', LABELS, (None, "unknown_label")),
    ('[{"label": "sad"}]', LABELS, (None, "bad_schema")),
    ('[{"emotion": "sad"', LABELS, (None, "invalid_json")),
    ("happy", LABELS, (None, "invalid_json")),
    ("", LABELS, (None, "invalid_json")),
])
def test_parse_answer(text, allowed, expected):
    assert parse_answer(text, allowed) == expected
