"""A generated CREMA-D-layout folder for the emotion tests: real WAV (soundfile) and FLV (PyAV:
FLV1 video + AAC audio) files, summaryTable.csv, tabulatedVotes.csv, VideoDemographics.csv, one
Git LFS pointer stub, one undecodable file, one clip without audio and one known-bad clip."""

from __future__ import annotations

import csv
import fractions
import os

import numpy as np

#: Usable clips and their summary votes (voice, face, multimodal), ties joined by ":".
GOOD = {
    "1001_DFA_ANG_XX": ("A", "A:F", "A"),
    "1003_TIE_SAD_LO": ("S", "N", "N:S"),
}
LFS_STUB = "1004_DFA_NEU_XX"      # the flv is a Git LFS pointer
BROKEN = "1005_IEO_FEA_MD"        # the flv holds garbage bytes: fails when decoded
NO_AUDIO = "1006_TIE_DIS_LO"      # the wav is missing
KNOWN_BAD = "1076_MTI_SAD_XX"     # real files, skipped as known bad
SKIPPED = {LFS_STUB: "Git LFS pointer", BROKEN: "could not be decoded", NO_AUDIO: "audio: missing",
           KNOWN_BAD: "known bad"}


def write_wav(path, seconds=1.0, rate=16000, seed=0):
    import soundfile as sf

    t = np.arange(int(rate * seconds)) / rate
    f0 = 150 + 50 * seed
    sf.write(path, (0.2 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), rate)


def write_flv(path, n_frames=4, size=56, seconds=1.0, rate=16000, seed=0):
    """An FLV file: ``n_frames`` random RGB frames (FLV1 codec, 4 fps) and an AAC mono track."""
    import av

    rng = np.random.default_rng(seed)
    with av.open(path, "w", format="flv") as c:
        v = c.add_stream("flv", rate=4)
        v.width = v.height = size
        v.pix_fmt = "yuv420p"
        a = c.add_stream("aac", rate=rate)
        a.layout = "mono"
        for _ in range(n_frames):
            img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            for pkt in v.encode(av.VideoFrame.from_ndarray(img, "rgb24")):
                c.mux(pkt)
        for pkt in v.encode():
            c.mux(pkt)
        samples = (0.2 * np.sin(np.arange(int(rate * seconds)) * 0.05)).astype(np.float32)
        for k in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, k:k + 1024], format="fltp",
                                               layout="mono")
            frame.sample_rate = rate
            frame.pts = k
            frame.time_base = fractions.Fraction(1, rate)
            for pkt in a.encode(frame):
                c.mux(pkt)
        for pkt in a.encode():
            c.mux(pkt)


def make_cremad(root) -> str:
    """Write the folder (see the module docstring); returns its path."""
    root = os.fspath(root)
    wav_dir, flv_dir = os.path.join(root, "AudioWAV"), os.path.join(root, "VideoFlash")
    res_dir = os.path.join(root, "processedResults")
    for d in (wav_dir, flv_dir, res_dir):
        os.makedirs(d, exist_ok=True)
    for seed, clip in enumerate([*GOOD, BROKEN, KNOWN_BAD, LFS_STUB, NO_AUDIO]):
        if clip != NO_AUDIO:
            write_wav(os.path.join(wav_dir, clip + ".wav"), seed=seed)
        flv = os.path.join(flv_dir, clip + ".flv")
        if clip == LFS_STUB:
            with open(flv, "w") as f:
                f.write("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 +
                        "\nsize 123456\n")
        elif clip == BROKEN:
            with open(flv, "wb") as f:
                f.write(b"FLV\x01" + np.random.default_rng(1).bytes(3000))
        else:
            write_flv(flv, seed=seed)
    levels = {1: "60.00", 2: "30.67:51.00"}
    with open(os.path.join(res_dir, "summaryTable.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "FileName", "VoiceVote", "VoiceLevel", "FaceVote", "FaceLevel",
                    "MultiModalVote", "MultiModalLevel"])
        votes = dict(GOOD, **{c: ("N", "N", "N") for c in (LFS_STUB, BROKEN, NO_AUDIO, KNOWN_BAD)})
        for i, (clip, (vv, fv, mv)) in enumerate(votes.items(), start=1):
            w.writerow([i, clip, vv, levels[len(vv.split(":"))], fv, levels[len(fv.split(":"))],
                        mv, levels[len(mv.split(":"))]])
    with open(os.path.join(res_dir, "tabulatedVotes.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "A", "D", "F", "H", "N", "S", "fileName", "numResponses", "agreement",
                    "emoVote"])
        for i, clip in enumerate(GOOD, start=1):
            w.writerow([i, 1, 0, 0, 1, 8, 0, clip, 10, 0.8, "N"])
    with open(os.path.join(root, "VideoDemographics.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ActorID", "Age", "Sex", "Race", "Ethnicity"])
        for actor in ("1001", "1002", "1003"):
            w.writerow([actor, 30, "Female", "Caucasian", "Not Hispanic"])
    return root


def tiny_model(kind: str, tmp_path_factory) -> str:
    """A tiny emotion model folder, built once per test session (shared by the test modules)."""
    from mllm_probe.emotion.tiny import save_tiny_emotion_model

    root = tmp_path_factory.getbasetemp()
    path = root / f"emotion-tiny-{kind}"
    if not (path / "config.json").exists():
        save_tiny_emotion_model(kind, path)
    return str(path)


def cremad_folder(tmp_path_factory) -> str:
    """The generated CREMA-D folder, written once per test session."""
    root = tmp_path_factory.getbasetemp() / "emotion-cremad"
    if not (root / "processedResults" / "summaryTable.csv").exists():
        make_cremad(root)
    return str(root)



def one_torch_thread():
    """Generator body of a module fixture: one intra-op torch thread while the module runs (the
    test machine's few cores are shared; more threads oversubscribe them and run 3x slower)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
