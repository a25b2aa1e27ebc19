"""The emotion experiment's reference media preprocessing (qwen-omni-utils for Qwen2.5-Omni),
token accounting and `xmodal emotion --plan`, on tiny models and the generated CREMA-D folder."""

import os
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("qwen_omni_utils")
pytest.importorskip("torchvision")

import cli_files
from emotion_media import GOOD, SKIPPED, cremad_folder, one_torch_thread, tiny_model

from mllm_probe.adapters import load_adapter
from mllm_probe.emotion import experiment, scoring
from mllm_probe.emotion.conditions import CONDITIONS, apply_condition
from mllm_probe.emotion.datasets import read_cremad
from mllm_probe.emotion.preprocess import Preprocessing, load_clip_media
from mllm_probe.emotion.prompts import prompt_text, variants
from mllm_probe.emotion.table import read_table

#: Pixel caps that keep the tiny model's video small (56 x 56 frames: 16 tokens per 2 frames).
CAPS = {"min_pixels": 28 * 28, "max_pixels": 56 * 56}


@pytest.fixture(scope="module", autouse=True)
def _threads():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data = cremad_folder(tmp_path_factory)
    qwen = load_adapter(tiny_model("qwen2_5_omni", tmp_path_factory))
    return {"data": data, "qwen": qwen, "clip": read_cremad(data).clips[0]}


def direct(adapter, clip, text, caps: dict, keep_size: bool):
    """The model card's steps: qwen-omni-utils' process_mm_info, then the processor with the
    audio taken as the video's track (transformers 5.24: load_audio_from_video)."""
    from qwen_omni_utils import process_mm_info

    video = {"type": "video", "video": clip.video, **caps}
    conversation = [{"role": "user", "content": [video, {"type": "audio", "audio": clip.audio},
                                                 {"type": "text", "text": text}]}]
    audios, _, videos, video_kwargs = process_mm_info(conversation, use_audio_in_video=False,
                                                           return_video_kwargs=True)
    shown = [{"role": "user", "content": [video, {"type": "text", "text": text}]}]
    rendered = adapter.processor.apply_chat_template(shown, add_generation_prompt=True,
                                                     tokenize=False)
    kwargs = {"fps": video_kwargs["fps"][0], "do_sample_frames": video_kwargs["do_sample_frames"]}
    if keep_size:  # caps below the processor's own: it is told the frames' size
        area = videos[0].shape[-2] * videos[0].shape[-1]
        kwargs["videos_kwargs"] = {"size": {"shortest_edge": area, "longest_edge": area}}
    return adapter.processor(text=rendered, audio=audios, videos=videos, return_tensors="pt",
                             load_audio_from_video=True, audio_from_video_indices=[0], **kwargs)


@pytest.mark.parametrize("caps", [CAPS, {}], ids=["pixel caps", "model card defaults"])
def test_reference_path_gives_the_layout_of_qwen_omni_utils_called_directly(setup, caps):
    adapter, clip = setup["qwen"], setup["clip"]
    text = prompt_text(variants()[0])
    media = load_clip_media(clip, Preprocessing("qwen-omni-utils", **caps), 16000)
    ours = adapter.build_inputs(text, audio=media.audio, video=media.frames,
                                **media.input_options()).model_inputs
    ref = direct(adapter, clip, text, caps, keep_size=bool(caps))
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    assert torch.equal(ours["video_grid_thw"], ref["video_grid_thw"])
    assert torch.equal(ours["feature_attention_mask"], ref["feature_attention_mask"])
    torch.testing.assert_close(ours["pixel_values_videos"], ref["pixel_values_videos"])
    torch.testing.assert_close(ours["input_features"], ref["input_features"])
    assert ours["use_audio_in_video"] is True
    # 1 s clip of 4 frames: 2 fps asks for 2, qwen-omni-utils' minimum is 4, so all 4 frames,
    # at a sample rate of 4 fps
    assert media.frames.shape[0] == 4 and media.fps == pytest.approx(4.0)
    side = 56 if caps else 336                        # 128 x 28 x 28 px at least by default
    assert tuple(media.frames.shape[-2:]) == (side, side)


def test_conditions_keep_their_definitions_under_the_reference_path(setup):
    adapter = setup["qwen"]
    media = load_clip_media(setup["clip"], Preprocessing("qwen-omni-utils", **CAPS), 16000)
    face_only, voice_only = (apply_condition(media, c) for c in ("face_only", "voice_only"))
    assert face_only.audio.shape == media.audio.shape and not face_only.audio.any()
    assert torch.equal(face_only.frames, media.frames)
    assert voice_only.frames.shape == media.frames.shape and not voice_only.frames.any()
    assert voice_only.frames.dtype == media.frames.dtype
    np.testing.assert_array_equal(voice_only.audio, media.audio)
    assert media.audio.any() and media.frames.any()   # the originals were not blanked
    ids = [scoring.build_prefix(adapter, audio=m.audio, video=m.frames, **m.input_options())
           .input_ids for m in (media, face_only, voice_only)]
    assert all(np.array_equal(ids[0], i) for i in ids[1:])   # same token layout


def test_token_counts_in_the_table_match_the_placeholders(setup, tmp_path):
    adapter, data = setup["qwen"], setup["data"]
    config = experiment.RunConfig(conditions=CONDITIONS, generate=False,
                                  preprocessing=Preprocessing("qwen-omni-utils", **CAPS))
    with open(os.devnull, "w") as log:
        result = experiment.run(adapter, read_cremad(data), tmp_path, config, limit=1, log=log)
    assert result["done"] == 3
    rows = read_table(tmp_path / "predictions.csv")
    cfg = adapter.model.config
    for cond in CONDITIONS:
        media = apply_condition(load_clip_media(setup["clip"], config.preprocessing, 16000), cond)
        prompt = adapter.build_inputs(prompt_text(variants()[0]), audio=media.audio,
                                      video=media.frames, **media.input_options())
        ids, mi = prompt.input_ids, prompt.model_inputs
        audio = int((ids == cfg.audio_token_index).sum())
        vision = int(np.isin(ids, [cfg.image_token_index, cfg.video_token_index]).sum())
        frames = int(mi["feature_attention_mask"].sum())       # mel frames -> encoder outputs
        assert audio == ((frames - 1) // 2 + 1 - 2) // 2 + 1
        assert vision == int(mi["video_grid_thw"].prod())      # merge size 1
        mine = [r for r in rows if r["condition"] == cond]
        assert len(mine) == len(variants())
        for r in mine:
            assert (int(r["tokens_audio"]), int(r["tokens_vision"])) == (audio, vision)
        first = next(r for r in mine if r["variant"] == "0")
        assert int(first["tokens_prompt"]) == len(ids)
        assert sum(int(first[f"tokens_{m}"]) for m in ("text", "audio", "vision", "special")) \
            < len(ids)                                            # the prefix: media, no prompt
        forbidding = next(r for r in mine if r["variant"] == "56")
        v = variants()[56]
        full = adapter.build_inputs(prompt_text(v), audio=media.audio, video=media.frames,
                                    **media.input_options())
        assert int(forbidding["tokens_prompt"]) == len(full.input_ids)


def test_forward_passes_counted_without_a_model_match_the_run(setup):
    adapter = setup["qwen"]
    media = load_clip_media(setup["clip"], Preprocessing("qwen-omni-utils", **CAPS), 16000)
    calls = []
    hook = adapter.model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        for generate in (False, True):
            calls.clear()
            config = experiment.RunConfig(conditions=CONDITIONS, generate=generate,
                                          max_new_tokens=3, batch_size=16)
            experiment.score_unit(adapter, media, config)
            prefix = scoring.build_prefix(adapter, audio=media.audio, video=media.frames,
                                          **media.input_options())
            plan = scoring.forward_passes(adapter.tokenizer, prefix, list(variants()),
                                          batch_size=16, generate=generate, max_new_tokens=3)
            if generate:  # answers may stop early: the plan is an upper bound
                assert 1 + plan["scores"] < len(calls) <= 1 + plan["scores"] + plan["generate"]
            else:
                assert len(calls) == plan["prefix"] + plan["scores"] and plan["generate"] == 0
    finally:
        hook.remove()


def run_cli(args, capsys):
    return cli_files.run_cli(["emotion", *args], capsys)


@pytest.mark.parametrize("kind", ["qwen2_5_omni", "gemma3n"])
def test_plan_reads_clips_and_processor_only(kind, setup, tmp_path_factory, tmp_path, capsys):
    model = tiny_model(kind, tmp_path_factory)
    caps = ["--min-pixels", "784", "--max-pixels", "3136"] if kind == "qwen2_5_omni" else \
        ["--num-frames", "2"]
    out = tmp_path / "out"
    start = time.perf_counter()
    code, stdout, err = run_cli(["--data", setup["data"], "--model", model, "--out", str(out),
                                 "--plan", "--dtype", "bfloat16", *caps], capsys)
    seconds = time.perf_counter() - start
    assert code == 0, err
    assert not out.exists()                       # nothing written
    assert f"clips: {len(GOOD)} usable, {len(SKIPPED)} skipped" in stdout
    for clip in SKIPPED:
        assert f"skipped {clip}:" in stdout
    table = [line.split() for line in stdout.splitlines() if line.strip().startswith(tuple(GOOD))]
    assert len(table) == len(GOOD)
    header = next(line.split() for line in stdout.splitlines()
                  if line.split()[:1] == ["clip"])
    col = {name: header.index(name) for name in ("text", "audio", "vision", "special", "prefix")}
    if kind == "qwen2_5_omni":
        for row in table:   # 1 s of audio: 25 tokens; 4 frames of 56 px: 2 x 16 tokens
            assert (row[col["audio"]], row[col["vision"]]) == ("25", "32")
    else:                   # Gemma 3n: 8 audio soft tokens, 2 frames x 4 image soft tokens
        for row in table:
            assert (row[col["audio"]], row[col["vision"]]) == ("8", "8")
    for row in table:
        counts = [int(row[col[m]]) for m in ("text", "audio", "vision", "special")]
        assert sum(counts) == int(row[col["prefix"]]) and row[col["prefix"] + 1] == "same"
    assert "forward passes per clip x condition: 1 prefix +" in stdout
    assert "bfloat16" in stdout and "largest peak" in stdout
    print(f"--plan ({kind}) took {seconds:.1f} s")


@pytest.mark.parametrize("args, message", [
    (["--fps", "2", "--num-frames", "4"], "give --fps (2.0) or --num-frames (4), not both"),
    (["--fps", "0"], "argument --fps: must be positive"),
    (["--preprocessing", "processor", "--max-pixels", "3136"],
     "--fps and the pixel caps apply to the qwen-omni-utils preprocessing only"),
    (["--min-pixels", "4000", "--max-pixels", "3136"], "--min-pixels 4000 exceeds --max-pixels"),
])
def test_bad_preprocessing_options_exit_2(args, message, setup, tmp_path_factory, tmp_path,
                                          capsys):
    model = tiny_model("qwen2_5_omni", tmp_path_factory)
    code, _, err = run_cli(["--data", setup["data"], "--model", model, "--out",
                            str(tmp_path / "o"), "--plan", *args], capsys)
    assert code == 2 and message in err, err
