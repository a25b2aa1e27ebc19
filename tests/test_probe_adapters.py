"""Adapters on tiny saved checkpoints with real processors and real media files."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("torchvision", reason="transformers' Qwen2.5-Omni and Gemma 3n processors "
                                          "need torchvision")

from test_probe_capture import TOL, reference

from mllm_probe.adapters import QwenOmniAdapter, load_adapter
from mllm_probe.bundle import load_bundle, save_bundle
from mllm_probe.media import load_audio, load_image, load_video_frames
from mllm_probe.modality import AUDIO, VISION, spans
from mllm_probe.probe import probe, probe_files
from mllm_probe.tiny import save_tiny_gemma3n, save_tiny_qwen_omni


def write_media(folder) -> dict:
    """A 1 s wav (22.05 kHz, resampled on load), an 8-frame 56 px mp4 and an 80 px png."""
    import av
    import soundfile as sf
    from PIL import Image

    rng = np.random.default_rng(0)
    wav = os.path.join(folder, "clip.wav")
    sf.write(wav, (0.3 * np.sin(np.arange(22050) * 0.05)).astype(np.float32), 22050)
    mp4 = os.path.join(folder, "clip.mp4")
    with av.open(mp4, "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width = stream.height = 56
        stream.pix_fmt = "yuv420p"
        for i in range(8):
            frame = av.VideoFrame.from_ndarray(np.full((56, 56, 3), 30 * i, np.uint8), "rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    png = os.path.join(folder, "face.png")
    Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(png)
    return {"audio": wav, "video": mp4, "image": png}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return write_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    path = save_tiny_qwen_omni(tmp_path_factory.mktemp("qwen"), full=True)
    return path, load_adapter(path)


# Qwen's processor sizes video frames to >= 128 x 28 x 28 pixels by default; keep the tiny
# model tiny
SMALL_VIDEO = {"videos_kwargs": {"size": {"shortest_edge": 28 * 28, "longest_edge": 56 * 56}}}


def eager_maps(adapter, prompt):
    out = adapter.forward(prompt, attn_implementation="eager", output_attentions=True)
    return torch.stack(out.attentions)[:, 0].double().numpy()


def test_qwen_full_checkpoint_loads_the_thinker_weights(qwen):
    from safetensors import safe_open

    path, adapter = qwen
    assert isinstance(adapter, QwenOmniAdapter)
    assert type(adapter.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    with safe_open(os.path.join(path, "model.safetensors"), "pt") as f:
        saved = f.get_tensor("thinker.model.layers.1.self_attn.q_proj.weight")  # released layout
    loaded = next(p for n, p in adapter.model.named_parameters()  # module paths vary by version
                  if n.endswith("layers.1.self_attn.q_proj.weight") and "audio" not in n)
    torch.testing.assert_close(loaded, saved)  # not a fresh random init
    assert adapter.layer_types() == ("full_attention",) * 4


def test_qwen_inputs_from_files_have_placeholder_spans(qwen, media):
    _, adapter = qwen
    audio = load_audio(media["audio"], adapter.sampling_rate)
    assert audio.shape == (16000,)  # 22.05 kHz resampled to the processor's 16 kHz
    frames = load_video_frames(media["video"], num_frames=4)
    prompt = adapter.build_inputs("what emotion is this", audio=audio, video=frames,
                                  processor_kwargs=SMALL_VIDEO)
    runs = [r for r in spans(prompt.token_modality) if r[0] in ("audio", "vision")]
    # 4 frames of 56 px -> grid (2, 4, 4) = 32 video tokens; 100 mel frames -> 25 audio tokens
    assert [(name, stop - start) for name, start, stop in runs] == [("vision", 32), ("audio", 25)]
    np.testing.assert_array_equal(prompt.token_modality == VISION, prompt.input_ids == 3)
    np.testing.assert_array_equal(prompt.token_modality == AUDIO, prompt.input_ids == 1)
    assert prompt.model_inputs["video_grid_thw"].tolist() == [[2, 4, 4]]


def test_qwen_probe_answer_rows_equal_eager(qwen, media, tmp_path):
    _, adapter = qwen
    bundle = probe_files(adapter, "what emotion is this", audio=media["audio"],
                         video=media["video"], num_frames=4, query="answer", answer_tokens=2,
                         full_map_layers=(1,), processor_kwargs=SMALL_VIDEO)
    path = tmp_path / "q.bundle"
    save_bundle(path, bundle)
    loaded = load_bundle(path)
    S = len(loaded.token_modality)
    assert loaded.query_index.tolist() == [S - 2, S - 1] and loaded.query_set == {"kind": "answer"}
    assert len(loaded.extra["answer_ids"]) == 2
    assert [i["kind"] for i in loaded.inputs] == ["audio", "video"]
    assert all(len(i["sha256"]) == 64 for i in loaded.inputs)
    assert loaded.model["architecture"] == "qwen2_5_omni_thinker"
    assert len(loaded.model["config_hash"]) == 64 and "transformers" in loaded.versions
    assert set(loaded.encoder_entropy) == {"audio_tower", "visual"}
    # the same forward pass in eager mode, reduced independently
    prompt = adapter.build_inputs("what emotion is this", audio=load_audio(media["audio"]),
                                  video=load_video_frames(media["video"], 4),
                                  processor_kwargs=SMALL_VIDEO)
    prompt = adapter.append_answer(prompt, loaded.extra["answer_ids"])
    maps = eager_maps(adapter, prompt)
    ref = reference(maps, prompt.token_modality, loaded.query_index)
    for name, value in ref.items():
        np.testing.assert_allclose(getattr(loaded, name), value, atol=TOL, err_msg=name)
    np.testing.assert_allclose(loaded.full_maps[1], maps[1][:, loaded.query_index], atol=TOL)


def test_gemma3n_adapter_audio_and_image(tmp_path_factory, media):
    pytest.importorskip("timm", reason="Gemma 3n's vision tower is a timm model")
    path = save_tiny_gemma3n(tmp_path_factory.mktemp("gemma"), sliding_window=8)
    adapter = load_adapter(path)
    assert adapter.architecture == "gemma3n"
    assert adapter.layer_types() == ("sliding_attention", "full_attention") * 2
    prompt = adapter.build_inputs("what emotion is this", audio=load_audio(media["audio"]),
                                  image=load_image(media["image"]))
    runs = [(n, b - a) for n, a, b in spans(prompt.token_modality)]
    # boi + 4 image soft tokens + eoi, boa + 8 audio soft tokens + eoa (delimiters special)
    assert ("vision", 4) in runs and ("audio", 8) in runs
    np.testing.assert_array_equal(prompt.token_modality == AUDIO, prompt.input_ids == 105)
    assert prompt.token_modality[list(prompt.input_ids).index(104)] == 3  # eoa is special
    bundle = probe(adapter, prompt, query="all")
    maps = eager_maps(adapter, prompt)
    for name, value in reference(maps, prompt.token_modality, bundle.query_index).items():
        np.testing.assert_allclose(getattr(bundle, name), value, atol=TOL, err_msg=name)
    # the last (text) query of a sliding layer sees at most 8 keys
    assert bundle.row_visible[0, -1].sum() == 8
    assert bundle.row_visible[1, -1].sum() == len(maps[0, 0])
