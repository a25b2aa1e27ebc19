"""Attention capture on tiny random models: equal to the reduction of eager attention maps.

Models are built from configs in the test (no download). The reference reduces the eager
``output_attentions`` maps independently, in float64 numpy.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from mllm_probe.capture import CAPTURE_IMPLEMENTATION, CapturePlan, capturing, register_capture
from mllm_probe.tiny import (
    tiny_gemma3n,
    tiny_qwen_omni_thinker,
)

TOL = 1e-6
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reference(maps: np.ndarray, tm: np.ndarray, qi: np.ndarray, M: int = 4) -> dict:
    """Reduce eager maps (L, H, S, S) for query rows qi, loop by loop."""
    L, H = maps.shape[:2]
    rows = np.zeros((L, H, len(qi), M))
    for r, q in enumerate(qi):
        for k in range(maps.shape[-1]):
            rows[:, :, r, tm[k]] += maps[:, :, q, k]
    block = np.zeros((L, H, M, M))
    entropy = np.zeros((L, H, M))
    visible = np.zeros((L, M, M))
    counts = np.bincount(tm[qi], minlength=M)
    for r, q in enumerate(qi):
        a = tm[q]
        block[:, :, a] += rows[:, :, r] / counts[a]
        p = maps[:, :, q]
        logp = np.log(np.where(p > 0, p, 1))
        entropy[:, :, a] += -(p * logp).sum(-1) / counts[a]
        for k in range(maps.shape[-1]):
            visible[:, a, tm[k]] += (maps[:, 0, q, k] > 0) / counts[a]
    return {"row_mass": rows, "block_mass": block, "entropy": entropy, "visible_count": visible}


def eager_and_capture(model, inputs, tm, qi, **plan_kw):
    model.set_attn_implementation("eager")
    with torch.no_grad():
        ref = model(**inputs, output_attentions=True, use_cache=False)
    maps = torch.stack(ref.attentions)[:, 0].double().numpy()
    model.set_attn_implementation(register_capture())
    plan = CapturePlan(tm, qi, **plan_kw)
    with torch.no_grad(), capturing(model, plan) as recorder:
        out = model(**inputs, use_cache=False)
    model.set_attn_implementation("eager")
    return maps, recorder.result(), (out.logits - ref.logits).abs().max().item()


@pytest.fixture(scope="module")
def qwen():
    return tiny_qwen_omni_thinker()


def test_qwen_thinker_capture_equals_eager_reduction(qwen):
    model, inputs, tm = qwen
    assert tm.tolist()[:19] == [0, 0, 3] + [1] * 7 + [3, 3] + [2] * 4 + [3, 0, 0]
    qi = np.arange(len(tm))
    maps, result, logit_diff = eager_and_capture(model, inputs, tm, qi, full_map_layers={2})
    assert logit_diff < 1e-5  # the capture attention computes the same model output
    ref = reference(maps, tm, qi)
    for name, value in ref.items():
        np.testing.assert_allclose(getattr(result, name), value, atol=TOL, err_msg=name)
    np.testing.assert_allclose(result.full_maps[2], maps[2], atol=TOL)
    # causal order: row i sees exactly i + 1 keys
    np.testing.assert_allclose(result.row_visible[0].sum(-1), np.arange(1, len(tm) + 1))
    # the audio and vision encoders go through the attention interface too
    assert set(result.encoder_entropy) == {"audio_tower", "visual"}
    visual, audio = result.encoder_entropy["visual"], result.encoder_entropy["audio_tower"]
    assert visual.shape == audio.shape == (2, 4)
    # vision block 0 attends within windows of one 14 px patch (entropy 0); block 1 over all 4
    np.testing.assert_array_equal(visual[0], 0)
    assert np.all((visual[1] > 0.5) & (visual[1] <= np.log(4) + 1e-6))
    # audio: 30 mel frames -> 15 encoder positions, one window
    assert np.all((audio > 0.5) & (audio <= np.log(15) + 1e-6))


def test_chunked_rows_and_query_subset_agree(qwen):
    model, inputs, tm = qwen
    qi = np.array([3, 12, len(tm) - 1])
    maps, small, _ = eager_and_capture(model, inputs, tm, qi, chunk_elements=64)  # 1 row a block
    ref = reference(maps, tm, qi)
    for name, value in ref.items():
        np.testing.assert_allclose(getattr(small, name), value, atol=TOL, err_msg=name)
    # only audio, vision and text rows were asked for; the special row of the block stays zero
    np.testing.assert_array_equal(small.block_mass[:, :, 3], 0)


def test_capture_outside_context_is_plain_eager(qwen):
    model, inputs, _ = qwen
    model.set_attn_implementation("eager")
    with torch.no_grad():
        ref = model(**inputs, use_cache=False).logits
    model.set_attn_implementation(register_capture())
    with torch.no_grad():
        out = model(**inputs, use_cache=False).logits
    model.set_attn_implementation("eager")
    assert CAPTURE_IMPLEMENTATION == "xmodal_capture"
    assert (out - ref).abs().max().item() < 1e-5


def test_plan_and_context_errors(qwen):
    model, _, tm = qwen
    with pytest.raises(ValueError, match="query_index must be sorted unique positions"):
        CapturePlan(tm, np.array([4, 2]))
    with pytest.raises(ValueError, match=r"token_modality values must lie in \[0, 4\)"):
        CapturePlan(np.array([0, 5]), np.array([0]))
    plan = CapturePlan(tm, np.array([0]), full_map_layers=frozenset({9}))
    with pytest.raises(ValueError, match=r"full-map layers \[9\] out of range"), \
            capturing(model, plan):
        pass
    with capturing(model, CapturePlan(tm, np.array([0]))) as recorder:
        pass  # no forward pass: nothing captured
    with pytest.raises(RuntimeError, match=r"language layers \[0, 1, 2, 3\] were not captured"):
        recorder.result()


@pytest.fixture(scope="module")
def gemma():
    pytest.importorskip("timm",
                        reason="Gemma 3n's vision tower is a timm model (needs torchvision)")
    return tiny_gemma3n()


def test_gemma3n_capture_equals_eager_reduction(gemma):
    model, inputs, tm = gemma
    assert tm.tolist()[:20] == [3, 0, 0, 3] + [2] * 4 + [3, 3] + [1] * 8 + [3, 0]
    qi = np.arange(len(tm))
    maps, result, logit_diff = eager_and_capture(model, inputs, tm, qi)
    assert logit_diff < 1e-5
    for name, value in reference(maps, tm, qi).items():
        np.testing.assert_allclose(getattr(result, name), value, atol=TOL, err_msg=name)


def test_gemma3n_sliding_window_limits_visible_mass(gemma):
    model, inputs, tm = gemma
    last = len(tm) - 1  # a text query 10 positions after the last audio token
    _, result, _ = eager_and_capture(model, inputs, tm, np.array([last]))
    sliding, full = 0, 1  # layer types alternate: sliding, full, sliding, full
    assert model.config.text_config.layer_types[sliding] == "sliding_attention"
    # the window of 6 keys holds no audio: nothing visible, no mass
    assert result.row_visible[sliding, 0].tolist() == [6.0, 0.0, 0.0, 0.0]
    np.testing.assert_array_equal(result.row_mass[sliding, :, 0, 1], 0)
    # the global layer sees every key
    assert result.row_visible[full, 0].tolist() == np.bincount(tm, minlength=4).tolist()
    assert np.all(result.row_mass[full, :, 0, 1] > 0)


def test_peak_memory_does_not_grow_with_layers():
    """benchmarks/probe_memory.py at S = 1024, 2 vs 8 layers, in a fresh process."""
    script = os.path.join(ROOT, "benchmarks", "probe_memory.py")
    out = subprocess.run([sys.executable, script, "--seq", "1024", "--layers", "2,8", "--json"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    two, eight = json.loads(out.stdout.strip().splitlines()[-1])
    one_map = 4 * 1024 * 1024 * 4  # bytes of one layer's float32 (heads, S, S) attention map
    assert eight["full_peak"] - two["full_peak"] > 4 * one_map, (two, eight)  # grows ~6 maps
    assert eight["capture_peak"] - two["capture_peak"] < one_map / 2, (two, eight)  # flat
    assert eight["capture_peak"] < eight["full_peak"] / 3, (two, eight)
