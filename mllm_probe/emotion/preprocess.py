"""Media preprocessing of a clip for a model: the reference settings of the model cards.

- ``qwen-omni-utils`` (Qwen2.5-Omni, its model card): the video is read by qwen-omni-utils
  (`fetch_video`: 2 fps, an even number of frames, at least 4; every frame resized to multiples of
  28 px with 128-768 tokens of 28 x 28 px per frame and a total budget), the audio (the clip's
  audio file, or the video's own track) at 16 kHz through `process_audio_info`, and the
  processor interleaves audio and video tokens in 2 s chunks (``use_audio_in_video``).
  ``num_frames`` replaces the frame rate by a fixed count; ``min_pixels``/``max_pixels``/
  ``total_pixels`` replace the pixel caps (per frame / per video, in pixels).
- ``frames`` (Gemma 3n, and the bare-processor path of any model): ``num_frames`` evenly spaced
  frames (default 8) given to the processor as they are decoded, the audio at the feature
  extractor's rate (16 kHz for Gemma 3n). Gemma 3n takes each frame as an image.

The result is a `Media` whose ``frames`` are what the processor gets: (F, H, W, 3) uint8 for
``frames``, (F, 3, H, W) float32 (0-255, resized) for ``qwen-omni-utils``; the conditions
(`mllm_probe.emotion.conditions.apply_condition`) are applied to them, so silence and blank
frames have the reference path's length, size and count.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from mllm_probe import media as _media
from mllm_probe.emotion.conditions import Media, load_media
from mllm_probe.emotion.datasets import Clip

PIPELINES = ("qwen-omni-utils", "frames")
#: Frames of the ``frames`` path when none are asked for.
DEFAULT_NUM_FRAMES = 8
#: qwen-omni-utils' sampling rate of audio (Hz).
QWEN_SAMPLING_RATE = 16000


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How the media of a clip become processor inputs (see the module docstring).

    pipeline: one of `PIPELINES`; fps: frames per second sampled (qwen-omni-utils; None: its 2 fps);
    num_frames: a fixed frame count instead; min_pixels/max_pixels: per-frame pixel caps,
    total_pixels: per-video cap (qwen-omni-utils; None: its defaults).
    """

    pipeline: str = "frames"
    fps: float | None = None
    num_frames: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    total_pixels: int | None = None

    def __post_init__(self):
        if self.pipeline not in PIPELINES:
            raise ValueError(f"preprocessing pipeline must be one of {PIPELINES}, got "
                             f"{self.pipeline!r}")
        if self.pipeline == "frames" and any(v is not None for v in (
                self.fps, self.min_pixels, self.max_pixels, self.total_pixels)):
            raise ValueError("--fps and the pixel caps apply to the qwen-omni-utils preprocessing "
                             "only (Qwen2.5-Omni)")
        if self.fps is not None and self.num_frames is not None:
            raise ValueError(f"give --fps ({self.fps}) or --num-frames ({self.num_frames}), not "
                             f"both")
        for name in ("fps", "num_frames", "min_pixels", "max_pixels", "total_pixels"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if (self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels):
            raise ValueError(f"--min-pixels {self.min_pixels} exceeds --max-pixels "
                             f"{self.max_pixels}")

    def describe(self) -> dict:
        """JSON-able settings (run fingerprint, summary)."""
        out = dataclasses.asdict(self)
        if self.pipeline == "frames" and self.num_frames is None:
            out["num_frames"] = DEFAULT_NUM_FRAMES
        if self.pipeline == "qwen-omni-utils":
            from importlib.metadata import version

            out["qwen_omni_utils"] = version("qwen-omni-utils")
        return out

    def check(self) -> None:
        """Raise ValueError if this preprocessing cannot run here (missing packages)."""
        if self.pipeline != "qwen-omni-utils":
            return
        import importlib.util

        missing = [m for m in ("qwen_omni_utils", "torchvision", "librosa")
                   if importlib.util.find_spec(m) is None]
        if missing:
            raise ValueError(f"the qwen-omni-utils preprocessing needs {', '.join(missing)} "
                             f"(pip install 'xmodal[probe,vision]'), or pass --preprocessing "
                             f"processor")
        if not any(importlib.util.find_spec(m) for m in ("decord", "torchcodec")):
            raise ValueError("qwen-omni-utils reads videos with decord or torchcodec, and neither "
                             "is installed (pip install decord), or pass --preprocessing processor")

    def video_element(self, path: str) -> dict:
        """The conversation element qwen-omni-utils reads: the video path and the overrides."""
        ele = {"type": "video", "video": path}
        for key in ("fps", "min_pixels", "max_pixels", "total_pixels"):
            if getattr(self, key) is not None:
                ele[key] = getattr(self, key)
        if self.num_frames is not None:
            ele["nframes"] = self.num_frames
        return ele


def for_adapter(adapter, mode: str = "reference", **options) -> Preprocessing:
    """The preprocessing of ``adapter``'s model: ``mode`` "reference" (its model card:
    qwen-omni-utils for Qwen2.5-Omni, frames otherwise) or "processor" (frames for every model)."""
    if mode not in ("reference", "processor"):
        raise ValueError(f"--preprocessing must be 'reference' or 'processor', got {mode!r}")
    qwen = getattr(adapter, "architecture", "") == "qwen2_5_omni_thinker"
    return Preprocessing("qwen-omni-utils" if mode == "reference" and qwen else "frames",
                         **options)


def load_clip_media(clip: Clip, prep: Preprocessing, sampling_rate: int) -> Media:
    """Decode ``clip`` as ``prep`` says; ValueError naming the file on any decoding problem.

    ``sampling_rate``: the model's audio rate (Hz) for the ``frames`` path.
    """
    if prep.pipeline == "frames":
        return load_media(clip, sampling_rate, prep.num_frames or DEFAULT_NUM_FRAMES)
    return qwen_reference_media(clip, prep)


def qwen_reference_media(clip: Clip, prep: Preprocessing) -> Media:
    """Frames (F, 3, H, W) and 16 kHz audio of ``clip`` read by qwen-omni-utils (model card)."""
    try:
        from qwen_omni_utils import process_audio_info
        from qwen_omni_utils.v2_5.vision_process import fetch_video
    except ImportError as err:
        raise ImportError(f"the reference preprocessing of Qwen2.5-Omni needs qwen-omni-utils "
                          f"and torchvision (pip install 'xmodal[probe,vision]'): {err}") from err
    path = os.fspath(clip.video)
    if not os.path.isfile(path):
        raise ValueError(f"video file {path!r} does not exist")
    try:
        video, fps = fetch_video(prep.video_element(path), return_video_sample_fps=True)
    except (AttributeError, RuntimeError) as err:  # its reader failed, then its torchvision
        raise ValueError(f"video file {path!r} could not be decoded by qwen-omni-utils' video "
                         f"reader ({type(err).__name__}: {err})") from err
    except (AssertionError, ValueError) as err:
        raise ValueError(f"video file {path!r}: qwen-omni-utils: {err}") from err
    if clip.audio is not None and os.path.isfile(clip.audio):
        source = clip.audio                           # librosa reads it at 16 kHz
    else:                                             # the video's own track, decoded by PyAV
        source = _media.load_audio(path, QWEN_SAMPLING_RATE)
    conversation = [{"role": "user", "content": [{"type": "audio", "audio": source}]}]
    try:
        (audio,) = process_audio_info(conversation, use_audio_in_video=False)
    except Exception as err:  # librosa and audioread raise many kinds
        raise ValueError(f"audio file {source!r}: qwen-omni-utils could not read it "
                         f"({type(err).__name__}: {err})") from err
    if audio.size == 0:
        raise ValueError(f"audio of {clip.id!r} holds no samples")
    return Media(np.asarray(audio, dtype=np.float32), video.float(), QWEN_SAMPLING_RATE,
                 fps=float(fps), audio_in_video=True)


__all__ = ["DEFAULT_NUM_FRAMES", "PIPELINES", "Preprocessing", "for_adapter", "load_clip_media",
           "qwen_reference_media"]
