"""Token modality of every sequence position, from the placeholder token ids of a model config.

Pure numpy (no torch): ``input_ids`` may be any array-like of shape (S,).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from mllm_probe.bundle import DEFAULT_MODALITIES

TEXT, AUDIO, VISION, SPECIAL = range(4)
MODALITIES = DEFAULT_MODALITIES  # ("text", "audio", "vision", "special")

# Config fields that name a placeholder (soft-token) id of a modality, across architectures.
_AUDIO_FIELDS = ("audio_token_id", "audio_token_index")
_VISION_FIELDS = ("image_token_id", "image_token_index", "video_token_id", "video_token_index")
# Config fields that name a delimiter token: those count as "special".
_SPECIAL_FIELDS = (
    "audio_start_token_id", "audio_end_token_id", "vision_start_token_id", "vision_end_token_id",
    "boa_token_id", "eoa_token_id", "boi_token_id", "eoi_token_id", "bos_token_id", "eos_token_id",
    "pad_token_id",
)


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
    """Which token ids belong to which modality.

    ``special`` ids win over placeholder ids, which win over ``*_ranges`` (half-open id ranges of
    a soft-token vocabulary, as in Gemma 3n); every other id is text.
    """

    audio_ids: frozenset[int] = frozenset()
    vision_ids: frozenset[int] = frozenset()
    special_ids: frozenset[int] = frozenset()
    audio_ranges: tuple[tuple[int, int], ...] = ()
    vision_ranges: tuple[tuple[int, int], ...] = ()

    def __post_init__(self):
        overlap = self.audio_ids & self.vision_ids
        if overlap:
            raise ValueError(f"token ids {sorted(overlap)} are listed as both audio and vision")

    def with_special(self, ids: Iterable[int]) -> ModalitySpec:
        """A copy with more special ids (e.g. a tokenizer's ``all_special_ids``), placeholders
        kept."""
        extra = {int(i) for i in ids} - self.audio_ids - self.vision_ids
        return dataclasses.replace(self, special_ids=self.special_ids | frozenset(extra))


def _ids(config: Any, fields: Iterable[str]) -> set[int]:
    out = set()
    for field in fields:
        value = _get(config, field)
        if isinstance(value, (list, tuple)):
            out.update(int(v) for v in value if v is not None)
        elif value is not None:
            out.add(int(value))
    return out


def _get(config: Any, field: str):
    if isinstance(config, Mapping):
        return config.get(field)
    return getattr(config, field, None)


def _soft_range(sub_config: Any) -> tuple[tuple[int, int], ...]:
    if sub_config is None:
        return ()
    offset, size = _get(sub_config, "vocab_offset"), _get(sub_config, "vocab_size")
    if offset is None or size is None:
        return ()
    return ((int(offset), int(offset) + int(size)),)


def spec_from_config(config: Any) -> ModalitySpec:
    """Modality spec from a transformers config (or a dict): placeholder, delimiter and
    soft-token ids.

    Reads ``audio_token_id``/``audio_token_index``, ``image_token_id``/``video_token_id`` (and the
    ``*_index`` spellings), delimiter ids (audio/vision start/end, boa/eoa/boi/eoi, bos/eos/pad)
    and, where the audio/vision sub-configs have ``vocab_offset``/``vocab_size`` (Gemma 3n), the
    soft-token id ranges. Raises ValueError if the config names no audio or vision placeholder at
    all.
    """
    audio, vision = _ids(config, _AUDIO_FIELDS), _ids(config, _VISION_FIELDS)
    special = _ids(config, _SPECIAL_FIELDS)
    text_config = _get(config, "text_config")
    if text_config is not None:
        special |= _ids(text_config, ("bos_token_id", "eos_token_id", "pad_token_id"))
    if not audio and not vision:
        raise ValueError(
            f"config {type(config).__name__} names no audio or vision placeholder id "
            f"(looked for {_AUDIO_FIELDS + _VISION_FIELDS}); pass the ids explicitly")
    return ModalitySpec(
        audio_ids=frozenset(audio),
        vision_ids=frozenset(vision),
        special_ids=frozenset(special - audio - vision),
        audio_ranges=_soft_range(_get(config, "audio_config")),
        vision_ranges=_soft_range(_get(config, "vision_config")),
    )


def token_modality(input_ids, spec: ModalitySpec) -> np.ndarray:
    """(S,) int32 modality index (TEXT, AUDIO, VISION, SPECIAL) of each id in ``input_ids`` (S,)."""
    ids = np.asarray(input_ids)
    if ids.ndim != 1:
        raise ValueError(f"input_ids must have shape (S,), got {ids.shape}")
    out = np.full(ids.shape, TEXT, dtype=np.int32)
    for ranges, mod in ((spec.audio_ranges, AUDIO), (spec.vision_ranges, VISION)):
        for lo, hi in ranges:
            out[(ids >= lo) & (ids < hi)] = mod
    out[np.isin(ids, list(spec.audio_ids))] = AUDIO
    out[np.isin(ids, list(spec.vision_ids))] = VISION
    out[np.isin(ids, list(spec.special_ids))] = SPECIAL
    return out


def spans(modality: np.ndarray, names: tuple[str, ...] = MODALITIES) -> list[tuple[str, int, int]]:
    """Contiguous runs of one modality: [(name, start, stop)] with ``stop`` exclusive."""
    modality = np.asarray(modality)
    if modality.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(modality)) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [modality.size]])
    return [(names[int(modality[a])], int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


__all__ = [
    "AUDIO",
    "MODALITIES",
    "SPECIAL",
    "TEXT",
    "VISION",
    "ModalitySpec",
    "spans",
    "spec_from_config",
    "token_modality",
]
