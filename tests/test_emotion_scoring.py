"""Prefix reuse: scores on the cached media prefix (all 57 variants batched, padded) equal a full
recomputation of every (variant, label) row, and batched greedy answers equal `generate`."""

import numpy as np
import pytest
from emotion_media import cremad_folder, one_torch_thread, tiny_model

from mllm_probe.adapters import load_adapter
from mllm_probe.emotion import scoring
from mllm_probe.emotion.conditions import load_media
from mllm_probe.emotion.datasets import read_cremad
from mllm_probe.emotion.prompts import LABELS, prompt_text, variants

#: Summed float32 log-probabilities (nats) of a few answer tokens; observed differences ~2e-6.
ATOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _threads():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return load_media(read_cremad(cremad_folder(tmp_path_factory)).clips[0], 16000, 4)


@pytest.mark.parametrize("kind, subset", [("qwen2_5_omni", (0, 3, 10, 30, 50)),
                                          ("gemma3n", (0, 30, 56))])
def test_prefix_reuse_equals_full_recomputation(kind, subset, media, tmp_path_factory):
    adapter = load_adapter(tiny_model(kind, tmp_path_factory))
    prefix = scoring.build_prefix(adapter, audio=media.audio, video=media.frames)
    vs = list(variants())
    encoded = scoring.encode_prefix(adapter, prefix)
    if kind == "gemma3n":  # the prefix is longer than the sliding window of the tiny model (16)
        assert encoded.length > adapter.text_config.sliding_window
    scores = scoring.label_scores(adapter, prefix, vs, encoded=encoded, batch_size=64)
    assert scores.shape == (57, 6)
    for v in vs:  # NaN exactly where forbidden
        np.testing.assert_array_equal(np.isnan(scores[v.index]),
                                      [label in v.forbidden for label in LABELS])
    assert np.all(scores[~np.isnan(scores)] < 0)
    ref = scoring.label_scores_recomputed(adapter, prefix, [vs[i] for i in subset])
    np.testing.assert_allclose(scores[list(subset)], ref, atol=ATOL, rtol=0)
    # the cache is not consumed: a second pass with another batch size gives the same scores
    again = scoring.label_scores(adapter, prefix, vs[:8], encoded=encoded, batch_size=5)
    np.testing.assert_allclose(again, scores[:8], atol=ATOL, rtol=0)


def test_batched_generation_equals_generate(media, tmp_path_factory):
    adapter = load_adapter(tiny_model("qwen2_5_omni", tmp_path_factory))
    prefix = scoring.build_prefix(adapter, audio=media.audio, video=media.frames)
    vs = list(variants())
    pick = [vs[0], vs[20], vs[56]]  # prompts of different lengths: padding in the batch
    texts = scoring.generate(adapter, prefix, pick, max_new_tokens=6)
    for v, text in zip(pick, texts, strict=False):
        full = adapter.build_inputs(prompt_text(v), audio=media.audio, video=media.frames)
        assert text == adapter.decode(adapter.generate(full, max_new_tokens=6))


def test_labels_the_tokenizer_cannot_tell_apart_are_refused(tmp_path_factory):
    from mllm_probe.tiny import tiny_qwen_omni_processor

    tok = tiny_qwen_omni_processor().tokenizer  # whitespace-only: every answer is one <unk>
    with pytest.raises(ValueError, match="same answer tokens for 'angry' and 'disgust'"):
        scoring.answer_split(tok)
