"""Reading probe inputs from files: audio (any container PyAV reads), video frames, images.

Audio comes back as mono float32 (T,) at the requested sampling rate; video frames as uint8
(F, H, W, 3); images as RGB ``PIL.Image``.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _require_file(path, what: str) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{what} file {path!r} does not exist")
    return path


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_audio(path, sampling_rate: int = 16000) -> np.ndarray:
    """(T,) float32 mono samples of the first audio stream of ``path``, resampled to
    ``sampling_rate``."""
    import av

    path = _require_file(path, "audio")
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sampling_rate)
    chunks = []
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise ValueError(f"audio file {path!r} has no audio stream")
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as err:
        raise ValueError(f"audio file {path!r} could not be decoded ({err})") from err
    if not chunks:
        raise ValueError(f"audio file {path!r} holds no samples")
    return np.concatenate(chunks).astype(np.float32)


def load_video_frames(path, num_frames: int | None = 8) -> np.ndarray:
    """(F, H, W, 3) uint8 RGB frames of ``path``: ``num_frames`` evenly spaced (all if None)."""
    import av

    path = _require_file(path, "video")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError(f"video file {path!r} has no video stream")
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except av.error.FFmpegError as err:
        raise ValueError(f"video file {path!r} could not be decoded ({err})") from err
    if not frames:
        raise ValueError(f"video file {path!r} holds no frames")
    if num_frames is not None and len(frames) > num_frames:
        pick = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
        frames = [frames[i] for i in pick]
    return np.stack(frames)


def load_frames_folder(path, num_frames: int | None = 8) -> np.ndarray:
    """(F, H, W, 3) uint8 frames from the image files of a folder, in name order."""
    from PIL import Image

    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"frames folder {path!r} does not exist")
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise ValueError(f"frames folder {path!r} holds no image files {IMAGE_SUFFIXES}")
    if num_frames is not None and len(names) > num_frames:
        pick = np.linspace(0, len(names) - 1, num_frames).round().astype(int)
        names = [names[i] for i in pick]
    frames = [np.asarray(Image.open(os.path.join(path, n)).convert("RGB")) for n in names]
    if len({f.shape for f in frames}) != 1:
        raise ValueError(f"frames folder {path!r}: images differ in size")
    return np.stack(frames)


def load_image(path):
    """RGB ``PIL.Image`` of an image file."""
    from PIL import Image, UnidentifiedImageError

    path = _require_file(path, "image")
    try:
        return Image.open(path).convert("RGB")
    except UnidentifiedImageError as err:
        raise ValueError(f"image file {path!r} could not be decoded ({err})") from err


__all__ = ["file_sha256", "load_audio", "load_frames_folder", "load_image", "load_video_frames"]
