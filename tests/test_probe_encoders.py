"""Media-encoder attention in bundles: Gemma 3n's audio conformer (captured by module hooks, it
bypasses transformers' AttentionInterface) and Qwen2.5-Omni's audio and vision encoders (through
the interface), on tiny random models with real processors."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("torchvision", reason="the tiny Gemma 3n vision tower is a timm model")

from mllm_probe.adapters import load_adapter
from mllm_probe.bundle import load_bundle, save_bundle
from mllm_probe.capture import CAPTURE_IMPLEMENTATION, CapturePlan, capturing
from mllm_probe.probe import probe
from mllm_probe.tiny import save_tiny_gemma3n, save_tiny_qwen_omni

AUDIO = (0.2 * np.sin(np.arange(6400) * 0.05)).astype(np.float32)  # 0.4 s at 16 kHz


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    return load_adapter(save_tiny_gemma3n(tmp_path_factory.mktemp("gemma")))


def conformer_frames(adapter, prompt) -> list[int]:
    """Valid (unpadded) frames seen by each audio-attention layer, read by a plain hook."""
    frames = []
    modules = [m for m in adapter.model.modules() if type(m).__name__ == "Gemma3nAudioAttention"]
    hooks = [m.register_forward_pre_hook(lambda mod, args: frames.append(int((~args[1]).sum())))
             for m in modules]
    try:
        adapter.forward(prompt)
    finally:
        for h in hooks:
            h.remove()
    return frames


def test_gemma3n_bundle_holds_audio_encoder_blocks(gemma, tmp_path):
    prompt = gemma.build_inputs("what emotion", audio=AUDIO)
    bundle = probe(gemma, prompt, query="last")
    save_bundle(tmp_path / "g.bundle", bundle)
    enc = load_bundle(tmp_path / "g.bundle").encoders["audio_tower"]
    cfg = gemma.model.config.audio_config
    L, H = cfg.conf_num_hidden_layers, cfg.conf_num_attention_heads
    assert enc.modalities == ("audio",)
    assert enc.layer_types == ("local_causal_attention",) * L
    assert enc.block_mass.shape == (L, H, 1, 1) and enc.visible_count.shape == (L, 1, 1)
    # Rows sum to the mass on the keys each frame may see, and the module masks every other key
    # with finfo.min: a wrong window or padding mask in the capture would lose mass here.
    np.testing.assert_allclose(enc.block_mass.sum(-1), 1.0, atol=1e-5)
    # The window: the frame itself and up to conf_attention_context_left - 1 frames before it.
    past = cfg.conf_attention_context_left - 1
    T = conformer_frames(gemma, prompt)
    assert len(T) == L and T[0] > past  # the clip is longer than the window
    expected = [np.mean([min(t, past) + 1 for t in range(n)]) for n in T]
    np.testing.assert_allclose(enc.visible_count[:, 0, 0], expected, rtol=1e-6)
    ent = load_bundle(tmp_path / "g.bundle").encoder_entropy["audio_tower"]
    assert ent.shape == (L, H) and np.all(ent > 0) and np.all(ent <= np.log(past + 1) + 1e-5)


def test_audio_hooks_change_nothing_and_are_removed(gemma):
    prompt = gemma.build_inputs("what emotion", audio=AUDIO)
    plan = CapturePlan(prompt.token_modality, np.array([len(prompt.input_ids) - 1]))
    with capturing(gemma.model, plan) as recorder:
        hooked = gemma.forward(prompt, attn_implementation=CAPTURE_IMPLEMENTATION).logits
    plain = gemma.forward(prompt, attn_implementation=CAPTURE_IMPLEMENTATION).logits
    assert torch.equal(hooked, plain)
    assert sorted(recorder._encoders) == [("audio_tower", 0), ("audio_tower", 1)]
    attn = [m for m in gemma.model.modules() if type(m).__name__ == "Gemma3nAudioAttention"]
    assert all(not m._forward_pre_hooks and not m.relative_position_embedding._forward_hooks
               for m in attn)


def test_qwen_bundle_holds_audio_and_vision_encoder_blocks(tmp_path):
    qwen = load_adapter(save_tiny_qwen_omni(tmp_path / "qwen", full=False))
    frames = np.random.default_rng(0).integers(0, 255, (2, 28, 28, 3), dtype=np.uint8)
    small = {"videos_kwargs": {"size": {"shortest_edge": 28 * 28, "longest_edge": 28 * 28}}}
    prompt = qwen.build_inputs("what emotion", audio=AUDIO, video=frames, processor_kwargs=small)
    bundle = probe(qwen, prompt, query="last")
    vision = qwen.model.config.vision_config
    assert set(bundle.encoders) == {"audio_tower", "visual"}
    visual = bundle.encoders["visual"]
    assert visual.modalities == ("vision",)
    assert visual.layer_types == tuple("full_attention" if i in vision.fullatt_block_indexes
                                       else "window_attention" for i in range(vision.depth))
    assert bundle.encoders["audio_tower"].layer_types == ("chunked_attention",) * 2
    for enc in bundle.encoders.values():
        np.testing.assert_allclose(enc.block_mass.sum(-1), 1.0, atol=1e-5)
        assert np.all(enc.visible_count >= 1)
