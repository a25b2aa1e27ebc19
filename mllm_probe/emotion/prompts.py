"""The emotion prompt: labels, the template, the 56 label-exclusion variants and answer parsing.

Template (one, documented here; ``{allowed}`` and ``{forbidden}`` are comma-separated labels in
`LABELS` order)::

    What emotion does the person in this clip express? Answer only with JSON of the form
    [{"emotion": "<label>"}]. Choose one of: {allowed}.[ Do not answer {forbidden}.]

(the bracketed sentence only in perturbed variants). The media (video frames, then audio) come
before this text in the user turn, and the instruction shared by all variants comes before the
label lists, so the media prefix and the shared start are encoded once for all 57 variants. The
model's answer is expected to be ``[{"emotion": "<label>"}]``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json

#: The six CREMA-D emotions, in the order used for every table axis.
LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad")
#: CREMA-D file-name codes and vote letters.
CODES = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral",
         "SAD": "sad"}
VOTE_LETTERS = {"A": "angry", "D": "disgust", "F": "fear", "H": "happy", "N": "neutral",
                "S": "sad"}
#: Sizes of the forbidden subsets of the perturbed variants (6 + 15 + 20 + 15 = 56).
FORBID_SIZES = (1, 2, 3, 4)

TEMPLATE = ("What emotion does the person in this clip express? Answer only with JSON of the "
            "form [{{\"emotion\": \"<label>\"}}]. Choose one of: {allowed}.{forbid}")
FORBID_CLAUSE = " Do not answer {forbidden}."
#: The start of the expected answer; the label follows it.
ANSWER_PREFIX = '[{"emotion": "'


@dataclasses.dataclass(frozen=True)
class Variant:
    """One prompt variant: its index (0 = unperturbed) and the labels it forbids."""

    index: int
    forbidden: tuple[str, ...]

    @property
    def allowed(self) -> tuple[str, ...]:
        return tuple(label for label in LABELS if label not in self.forbidden)

    @property
    def name(self) -> str:
        """"none" or the forbidden labels joined by "+" (stable id for tables)."""
        return "+".join(self.forbidden) if self.forbidden else "none"


def variants() -> tuple[Variant, ...]:
    """The unperturbed prompt (index 0) and the 56 variants forbidding 1-4 labels (indices 1-56)."""
    subsets = [()] + [c for k in FORBID_SIZES for c in itertools.combinations(LABELS, k)]
    return tuple(Variant(i, tuple(s)) for i, s in enumerate(subsets))


def prompt_text(variant: Variant) -> str:
    """The user text of ``variant`` (placed after the media)."""
    forbid = (FORBID_CLAUSE.format(forbidden=", ".join(variant.forbidden))
              if variant.forbidden else "")
    return TEMPLATE.format(allowed=", ".join(variant.allowed), forbid=forbid)


def answer_text(label: str) -> str:
    """The full expected answer for ``label``: ``[{"emotion": "<label>"}]``."""
    return json.dumps([{"emotion": label}])


#: Outcomes of parsing a generated answer.
PARSE_STATUSES = ("ok", "invalid_json", "bad_schema", "unknown_label", "forbidden_label")


def parse_answer(text: str, allowed=LABELS) -> tuple[str | None, str]:
    """(label or None, status) of a generated answer; status is one of `PARSE_STATUSES`.

    The first JSON array or object in ``text`` is parsed; ``[{"emotion": x}]`` and
    ``{"emotion": x}`` are accepted; ``x`` is matched case-insensitively. A label outside
    ``allowed`` is returned with status "forbidden_label" (it is a valid label but disobeys the
    prompt).
    """
    start = min((i for i in (text.find("["), text.find("{")) if i >= 0), default=-1)
    if start < 0:
        return None, "invalid_json"
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError:
        return None, "invalid_json"
    if isinstance(value, list) and len(value) >= 1:
        value = value[0]
    if not isinstance(value, dict) or not isinstance(value.get("emotion"), str):
        return None, "bad_schema"
    label = value["emotion"].strip().lower()
    if label not in LABELS:
        return None, "unknown_label"
    return label, ("ok" if label in allowed else "forbidden_label")


__all__ = ["ANSWER_PREFIX", "CODES", "FORBID_SIZES", "LABELS", "PARSE_STATUSES", "TEMPLATE",
           "VOTE_LETTERS", "Variant", "answer_text", "parse_answer", "prompt_text", "variants"]
