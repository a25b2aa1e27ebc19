"""Token modality from config placeholder ids (numpy only; real configs where they build)."""

import numpy as np
import pytest

from mllm_probe.modality import (
    AUDIO,
    SPECIAL,
    TEXT,
    VISION,
    ModalitySpec,
    spans,
    spec_from_config,
    token_modality,
)

QWEN_7B = {  # the placeholder and delimiter ids of Qwen/Qwen2.5-Omni-7B's thinker config
    "audio_token_index": 151646, "image_token_index": 151655, "video_token_index": 151656,
    "audio_start_token_id": 151647, "audio_end_token_id": 151648,
    "vision_start_token_id": 151652, "vision_end_token_id": 151653,
}
GEMMA_3N = {  # google/gemma-3n-E4B-it
    "audio_token_id": 262273, "image_token_id": 262145, "boa_token_id": 256000,
    "eoa_token_id": 262272, "boi_token_id": 255999, "eoi_token_id": 262144,
    "audio_config": {"vocab_offset": 262272, "vocab_size": 128},
    "vision_config": {"vocab_offset": 262144, "vocab_size": 128},
}


def test_qwen_placeholder_ids():
    spec = spec_from_config(QWEN_7B)
    ids = [151644, 872, 151652, 151656, 151656, 151653, 151647, 151646, 151646, 151648, 3838]
    mod = token_modality(ids, spec)
    assert mod.tolist() == [TEXT, TEXT, SPECIAL, VISION, VISION, SPECIAL, SPECIAL, AUDIO, AUDIO,
                            SPECIAL, TEXT]
    assert spans(mod)[1:5] == [("special", 2, 3), ("vision", 3, 5), ("special", 5, 7),
                               ("audio", 7, 9)]


def test_gemma_soft_token_ranges_and_delimiters():
    spec = spec_from_config(GEMMA_3N)
    # eoi (262144) lies in the vision soft range and eoa (262272) in the audio range: both special
    ids = [2, 255999, 262145, 262150, 262144, 256000, 262273, 262300, 262272, 506]
    assert token_modality(ids, spec).tolist() == [TEXT, SPECIAL, VISION, VISION, SPECIAL,
                                                  SPECIAL, AUDIO, AUDIO, SPECIAL, TEXT]


def test_with_special_keeps_placeholders():
    spec = spec_from_config(QWEN_7B).with_special([151644, 151646])
    assert 151646 in spec.audio_ids and 151646 not in spec.special_ids
    assert token_modality([151644], spec).tolist() == [SPECIAL]


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="names no audio or vision placeholder"):
        spec_from_config({"bos_token_id": 1})
    with pytest.raises(ValueError, match=r"\[7\] are listed as both audio and vision"):
        ModalitySpec(audio_ids=frozenset({7}), vision_ids=frozenset({7}))
    with pytest.raises(ValueError, match=r"shape \(S,\)"):
        token_modality(np.zeros((2, 3), int), spec_from_config(QWEN_7B))


def test_real_configs():
    transformers = pytest.importorskip("transformers")
    from mllm_probe.tiny import tiny_qwen_omni_thinker_config

    spec = spec_from_config(tiny_qwen_omni_thinker_config())
    assert spec.audio_ids == {1} and spec.vision_ids == {2, 3}
    assert {4, 5, 7, 8} <= spec.special_ids
    assert isinstance(transformers.__version__, str)


def test_spans_cover_the_sequence():
    mod = np.array([3, 0, 0, 1, 1, 1, 0])
    runs = spans(mod)
    assert runs == [("special", 0, 1), ("text", 1, 3), ("audio", 3, 6), ("text", 6, 7)]
    assert spans(np.array([], dtype=int)) == []
