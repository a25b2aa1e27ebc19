"""The three input conditions of the emotion experiment, built from decoded media.

- ``face_voice``: the video frames and the voice (WAV, or the video's own audio track).
- ``face_only``:  the same frames; the audio replaced by silence of the same length.
- ``voice_only``: the same audio; every frame replaced by a blank (black) frame of the same size,
                  the frame count kept.

Audio is mono float32 (T,) at the model's sampling rate (Hz); frames uint8 (F, H, W, 3), or the
(F, 3, H, W) float32 frames of the reference preprocessing (`mllm_probe.emotion.preprocess`): the
conditions are applied to what the processor gets. WAV files are read with soundfile, video (FLV,
MP4, ...) and its audio with PyAV (`mllm_probe.media`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mllm_probe import media as _media
from mllm_probe.emotion.datasets import Clip

CONDITIONS = ("face_voice", "face_only", "voice_only")
#: Which perceived votes of CREMA-D match each condition.
PERCEPTION_OF = {"face_voice": "multimodal", "face_only": "face", "voice_only": "voice"}
#: Pixel value of the blank frames of ``voice_only``.
BLANK_VALUE = 0


@dataclasses.dataclass(frozen=True, eq=False)
class Media:
    """Decoded media of one clip: audio (T,) float32 at ``sampling_rate`` Hz, frames (F, H, W, 3)
    uint8 or (F, 3, H, W) float; ``fps``: frames per second of the sampled frames (None: not
    given to the processor); ``audio_in_video``: the audio is the video's track (Qwen2.5-Omni
    interleaves their tokens)."""

    audio: np.ndarray
    frames: np.ndarray
    sampling_rate: int
    fps: float | None = None
    audio_in_video: bool = False

    def input_options(self) -> dict:
        """Keyword arguments of `Adapter.build_inputs` for these media."""
        out = {}
        if self.audio_in_video:
            out["audio_in_video"] = True
        if self.fps is not None:
            out["video_fps"] = self.fps
        return out


def check_conditions(names) -> tuple[str, ...]:
    """Validate condition names (ValueError naming the bad one); keeps the given order."""
    names = tuple(names)
    bad = [n for n in names if n not in CONDITIONS]
    if bad or not names or len(set(names)) != len(names):
        raise ValueError(f"--conditions: expected distinct names among {CONDITIONS}, got "
                         f"{list(names)}")
    return names


def load_wav(path: str, sampling_rate: int) -> np.ndarray:
    """(T,) float32 mono samples of a WAV file at ``sampling_rate`` (resampled with PyAV if
    needed)."""
    import soundfile as sf

    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise ValueError(f"audio file {path!r} could not be decoded ({err})") from err
    if rate != sampling_rate:
        return _media.load_audio(path, sampling_rate)
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path!r} holds no samples")
    return data.mean(axis=1).astype(np.float32)


def load_media(clip: Clip, sampling_rate: int, num_frames: int | None = 8) -> Media:
    """Decode a clip's frames and audio; ValueError naming the file on any decoding problem."""
    frames = _media.load_video_frames(clip.video, num_frames)
    if clip.audio is None:
        audio = _media.load_audio(clip.video, sampling_rate)
    elif clip.audio.lower().endswith(".wav"):
        audio = load_wav(clip.audio, sampling_rate)
    else:
        audio = _media.load_audio(clip.audio, sampling_rate)
    return Media(audio, frames, sampling_rate)


def apply_condition(media: Media, condition: str) -> Media:
    """The media of ``condition`` (see the module docstring); shapes are kept."""
    if condition == "face_voice":
        return media
    if condition == "face_only":
        return dataclasses.replace(media, audio=np.zeros_like(media.audio))
    if condition == "voice_only":  # numpy or torch frames: same shape, dtype and device
        return dataclasses.replace(media, frames=media.frames * 0 + BLANK_VALUE)
    raise ValueError(f"unknown condition {condition!r} (expected one of {CONDITIONS})")


__all__ = [
    "BLANK_VALUE",
    "CONDITIONS",
    "PERCEPTION_OF",
    "Media",
    "apply_condition",
    "check_conditions",
    "load_media",
    "load_wav",
]
