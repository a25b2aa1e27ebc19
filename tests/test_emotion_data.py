"""CREMA-D reader, manifest, conditions from real decoded media, and the resumable table."""

import csv
import os

import numpy as np
import pytest
from emotion_media import BROKEN, GOOD, KNOWN_BAD, LFS_STUB, NO_AUDIO, cremad_folder

from mllm_probe.emotion.conditions import apply_condition, load_media
from mllm_probe.emotion.datasets import (
    KNOWN_BAD as KNOWN,
)
from mllm_probe.emotion.datasets import (
    media_problem,
    parse_label_set,
    read_cremad,
    read_manifest,
)
from mllm_probe.emotion.table import COLUMNS, PredictionTable, read_table


@pytest.fixture(scope="module")
def cremad(tmp_path_factory):
    return cremad_folder(tmp_path_factory)


def test_cremad_clips_labels_votes_and_skips(cremad):
    ds = read_cremad(cremad)
    # the broken flv passes the cheap checks; it is skipped when decoded (see test_emotion_run)
    assert [c.id for c in ds.clips] == sorted([*GOOD, BROKEN])
    assert len(ds.clips) + len(ds.skipped) == 6
    reasons = {s.id: s.reason for s in ds.skipped}
    assert set(reasons) == {LFS_STUB, NO_AUDIO, KNOWN_BAD}
    assert "Git LFS pointer" in reasons[LFS_STUB] and reasons[NO_AUDIO] == "audio: missing"
    assert reasons[KNOWN_BAD] == KNOWN[KNOWN_BAD]
    assert set(KNOWN) == {"1076_MTI_NEU_XX", "1064_TIE_SAD_XX", "1076_MTI_SAD_XX",
                          "1064_IEO_DIS_MD"}
    clip = {c.id: c for c in ds.clips}
    a = clip["1001_DFA_ANG_XX"]
    assert a.intended == "angry" and a.actor == "1001" and a.demographics["Sex"] == "Female"
    assert a.perceived == {"voice": {"angry"}, "face": {"angry", "fear"}, "multimodal": {"angry"}}
    assert clip["1003_TIE_SAD_LO"].perceived["multimodal"] == {"neutral", "sad"}
    assert a.video.endswith("VideoFlash/1001_DFA_ANG_XX.flv")
    assert a.audio.endswith("AudioWAV/1001_DFA_ANG_XX.wav")
    assert read_cremad(cremad, include_known_bad=True).clips[-1].id == KNOWN_BAD


def test_media_problems(tmp_path):
    assert media_problem(str(tmp_path / "none.flv")) == "missing"
    (tmp_path / "empty.wav").write_bytes(b"")
    assert media_problem(str(tmp_path / "empty.wav")) == "empty file"
    (tmp_path / "ok.wav").write_bytes(b"RIFF....")
    assert media_problem(str(tmp_path / "ok.wav")) is None


def test_bad_summary_table_names_file_line_and_field(cremad, tmp_path):
    import shutil

    root = tmp_path / "c"
    shutil.copytree(cremad, root)
    table = root / "processedResults" / "summaryTable.csv"
    lines = table.read_text().splitlines()
    lines[2] = lines[2].replace(",S,", ",Q,", 1)
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"summaryTable.csv line 3, field 'VoiceVote': unknown "
                                         r"emotion label 'Q'"):
        read_cremad(root)
    with pytest.raises(ValueError, match="no VideoFlash/"):
        read_cremad(tmp_path)


def test_manifest_reader(cremad, tmp_path):
    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "video", "audio", "perceived_face", "speaker"])
        w.writerow(["a", "ANG", os.path.join(cremad, "VideoFlash", "1001_DFA_ANG_XX.flv"), "",
                    "A:F", "x"])
        w.writerow(["b", "Happy", os.path.join(cremad, "VideoFlash", LFS_STUB + ".flv"), "", "",
                    "y"])
    ds = read_manifest(path)
    assert [(c.id, c.intended, c.audio) for c in ds.clips] == [("a", "angry", None)]
    assert ds.clips[0].perceived == {"face": {"angry", "fear"}}
    assert [s.id for s in ds.skipped] == ["b"] and "LFS" in ds.skipped[0].reason
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label,video\nx,bored,v.flv\n")
    with pytest.raises(ValueError, match=r"bad.csv line 2, field 'label': unknown emotion label "
                                         r"'bored'"):
        read_manifest(bad)
    bad.write_text("id,video\nx,v.flv\n")
    with pytest.raises(ValueError, match=r"bad.csv: missing column\(s\) \['label'\]"):
        read_manifest(bad)
    assert parse_label_set("N:H", "w") == {"neutral", "happy"}


def test_conditions_from_real_decoders(cremad):
    clip = read_cremad(cremad).clips[0]
    media = load_media(clip, 16000, num_frames=8)
    assert media.audio.shape == (16000,) and media.audio.dtype == np.float32   # 1 s wav, 16 kHz
    assert media.frames.shape == (4, 56, 56, 3) and media.frames.std() > 10   # 4 flv frames
    fv = apply_condition(media, "face_voice")
    fo = apply_condition(media, "face_only")
    vo = apply_condition(media, "voice_only")
    assert fv is media
    assert fo.audio.shape == media.audio.shape and not fo.audio.any()
    np.testing.assert_array_equal(fo.frames, media.frames)
    assert vo.frames.shape == media.frames.shape and not vo.frames.any()
    np.testing.assert_array_equal(vo.audio, media.audio)
    from mllm_probe.emotion.datasets import Clip

    flv_audio = load_media(Clip("x", "angry", video=clip.video), 16000).audio  # flv's AAC track
    assert abs(len(flv_audio) - 16000) < 2048 and np.abs(flv_audio).max() > 0.05
    with pytest.raises(ValueError, match="could not be decoded"):
        load_media(Clip("y", "fear", video=os.path.join(cremad, "VideoFlash", BROKEN + ".flv"),
                        audio=clip.audio), 16000)


def _unit(clip, cond, n=3):
    return [{"clip": clip, "condition": cond, "variant": v, "intended": "sad",
             "predicted": "sad", "score_sad": -1.5, "score_angry": float("nan")}
            for v in range(n)]


def test_table_resume_repairs_and_refuses_other_configurations(tmp_path):
    path = tmp_path / "predictions.csv"
    t = PredictionTable(path, {"model": "m", "conditions": ["face_voice"]}, 3, resume=False)
    t.append(_unit("a", "face_voice"))
    t.append(_unit("b", "face_voice"))
    with pytest.raises(ValueError, match="one unit of 3 rows"):
        t.append(_unit("c", "face_voice", n=2))
    with pytest.raises(ValueError, match="pass --resume"):
        PredictionTable(path, {"model": "m", "conditions": ["face_voice"]}, 3, resume=False)
    with pytest.raises(ValueError, match=r"another configuration \(model: 'm' there, 'n' now\)"):
        PredictionTable(path, {"model": "n", "conditions": ["face_voice"]}, 3, resume=True)
    # a killed writer: unit b lost its last row and a torn half line follows
    text = path.read_text().splitlines(keepends=True)
    path.write_text("".join(text[:-1]) + text[-1][:7])
    t = PredictionTable(path, {"model": "m", "conditions": ["face_voice"]}, 3, resume=True)
    assert t.done == {("a", "face_voice")} and t.dropped_rows == 2
    t.append(_unit("b", "face_voice"))
    rows = read_table(path)
    assert ([(r["clip"], r["variant"]) for r in rows]
            == [(c, str(v)) for c in "ab" for v in range(3)])
    assert rows[0]["score_sad"] == "-1.5" and rows[0]["score_angry"] == ""
    assert list(rows[0]) == list(COLUMNS)
