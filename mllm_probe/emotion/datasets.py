"""Emotion data sets: the CREMA-D layout and a generic CSV manifest, read into `Clip` records.

CREMA-D layout (https://github.com/CheyneyComputerScience/CREMA-D)::

    AudioWAV/<id>.wav                    16 kHz mono speech
    VideoFlash/<id>.flv                  video (with its own audio track)
    processedResults/summaryTable.csv    columns "", FileName, VoiceVote, VoiceLevel, FaceVote,
                                         FaceLevel, MultiModalVote, MultiModalLevel; ties joined
                                         by ":" (e.g. "A:F" with levels "30.67:51.00")
    processedResults/tabulatedVotes.csv  per-rater votes (not needed: the summary holds the
                                         votes per condition)
    VideoDemographics.csv                ActorID, Age, Sex, Race, Ethnicity (optional)

``<id>`` is ``{actor 1001-1091}_{sentence}_{ANG|DIS|FEA|HAP|NEU|SAD}_{LO|MD|HI|XX}``. The intended
label comes from the name, the perceived labels per condition (voice, face, multimodal) from the
summary votes, ties kept as label sets. Media that are missing, Git LFS pointer stubs (a download
without ``git lfs``) or empty are reported as `Skipped` with a reason instead of raising; so are the
known-bad clips. Malformed tables raise ValueError naming the file, line and field.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Mapping

from mllm_probe.emotion.prompts import CODES, LABELS, VOTE_LETTERS

#: Perception conditions of the CREMA-D votes, in the order of the summary table.
PERCEPTION = ("voice", "face", "multimodal")
#: CREMA-D clips known to be unusable (from the data set's README and issues).
KNOWN_BAD = {
    "1076_MTI_NEU_XX": "known bad in CREMA-D (broken flv/mp3)",
    "1064_TIE_SAD_XX": "known bad in CREMA-D (broken flv/mp3)",
    "1076_MTI_SAD_XX": "known bad in CREMA-D (no audio)",
    "1064_IEO_DIS_MD": "known bad in CREMA-D (one minute long)",
}
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"
CLIP_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_(ANG|DIS|FEA|HAP|NEU|SAD)_(LO|MD|HI|XX)$")
SUMMARY_COLUMNS = ("FileName", "VoiceVote", "VoiceLevel", "FaceVote", "FaceLevel",
                   "MultiModalVote", "MultiModalLevel")
DEMOGRAPHIC_COLUMNS = ("ActorID", "Age", "Sex", "Race", "Ethnicity")


@dataclasses.dataclass(frozen=True)
class Clip:
    """One clip: media paths, intended label and perceived label sets (possibly empty)."""

    id: str
    intended: str
    video: str | None = None
    audio: str | None = None
    perceived: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    actor: str | None = None
    demographics: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A clip left out and why (the path at fault, if any)."""

    id: str
    reason: str
    path: str | None = None


@dataclasses.dataclass(frozen=True)
class Dataset:
    clips: tuple[Clip, ...]
    skipped: tuple[Skipped, ...]
    source: str


def media_problem(path: str | None) -> str | None:
    """Why ``path`` cannot be used as media (missing, LFS pointer stub, empty), or None."""
    if path is None or not os.path.exists(path):
        return "missing"
    if not os.path.isfile(path):
        return "not a file"
    size = os.path.getsize(path)
    if size == 0:
        return "empty file"
    with open(path, "rb") as f:
        head = f.read(len(LFS_POINTER_PREFIX))
    if head == LFS_POINTER_PREFIX:
        return "Git LFS pointer stub (fetch the media with `git lfs pull`)"
    return None


def parse_label(text: str, where: str) -> str:
    """A label from its name (any case), CREMA-D code or vote letter; ValueError naming
    ``where``."""
    t = text.strip()
    for table in (CODES, VOTE_LETTERS):
        if t.upper() in table:
            return table[t.upper()]
    if t.lower() in LABELS:
        return t.lower()
    raise ValueError(f"{where}: unknown emotion label {text!r} (expected one of {LABELS}, "
                     f"a code {tuple(CODES)} or a vote letter {tuple(VOTE_LETTERS)})")


def parse_label_set(text: str, where: str) -> frozenset[str]:
    """A set of labels joined by ":" (CREMA-D ties) or "|"; empty text gives the empty set."""
    parts = [p for p in re.split(r"[:|]", text or "") if p.strip()]
    return frozenset(parse_label(p, where) for p in parts)


def _read_csv(path: str, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in required if c not in columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing} (found {columns})")
        return [(line, row) for line, row in enumerate(reader, start=2)]


def read_summary_table(path: str) -> dict[str, dict[str, frozenset[str]]]:
    """{clip id: {"voice"|"face"|"multimodal": label set}} from ``summaryTable.csv``."""
    out = {}
    for line, row in _read_csv(path, SUMMARY_COLUMNS):
        name = (row["FileName"] or "").strip()
        if not name:
            raise ValueError(f"{path} line {line}, field 'FileName': empty")
        votes = {}
        for cond, field in zip(PERCEPTION, ("VoiceVote", "FaceVote", "MultiModalVote"),
                               strict=False):
            where = f"{path} line {line}, field {field!r}"
            votes[cond] = parse_label_set(row[field] or "", where)
            levels = [p for p in (row[field.replace("Vote", "Level")] or "").split(":") if p]
            if votes[cond] and len(levels) not in (0, len(row[field].split(":"))):
                raise ValueError(f"{path} line {line}, field {field.replace('Vote', 'Level')!r}: "
                                 f"{len(levels)} levels for votes {row[field]!r}")
        out[name] = votes
    return out


def read_demographics(path: str) -> dict[str, dict[str, str]]:
    """{actor id: {"Age", "Sex", "Race", "Ethnicity"}} from ``VideoDemographics.csv``."""
    out = {}
    for line, row in _read_csv(path, DEMOGRAPHIC_COLUMNS):
        actor = (row["ActorID"] or "").strip()
        if not actor:
            raise ValueError(f"{path} line {line}, field 'ActorID': empty")
        out[actor] = {k: (row[k] or "").strip() for k in DEMOGRAPHIC_COLUMNS[1:]}
    return out


def read_cremad(root, *, include_known_bad: bool = False) -> Dataset:
    """Clips of a CREMA-D folder, with the clips left out and why (see the module docstring)."""
    root = os.fspath(root)
    video_dir, audio_dir = os.path.join(root, "VideoFlash"), os.path.join(root, "AudioWAV")
    if not os.path.isdir(video_dir):
        raise ValueError(f"--data {root}: no VideoFlash/ folder (not a CREMA-D layout)")
    stems: dict[str, dict[str, str]] = {}
    for folder, kind, suffix in ((video_dir, "video", ".flv"), (audio_dir, "audio", ".wav")):
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                stem, ext = os.path.splitext(name)
                if ext.lower() == suffix:
                    stems.setdefault(stem, {})[kind] = os.path.join(folder, name)
    summary_path = os.path.join(root, "processedResults", "summaryTable.csv")
    summary = read_summary_table(summary_path) if os.path.isfile(summary_path) else {}
    demo_path = os.path.join(root, "VideoDemographics.csv")
    demographics = read_demographics(demo_path) if os.path.isfile(demo_path) else {}
    clips, skipped = [], []
    for stem in sorted(stems):
        files = stems[stem]
        m = CLIP_NAME.match(stem)
        if m is None:
            skipped.append(Skipped(stem, "file name does not follow "
                                         "{actor}_{sentence}_{EMOTION}_{LEVEL}",
                                   files.get("video") or files.get("audio")))
            continue
        if stem in KNOWN_BAD and not include_known_bad:
            skipped.append(Skipped(stem, KNOWN_BAD[stem], files.get("video")))
            continue
        video = files.get("video") or os.path.join(video_dir, stem + ".flv")
        if (problem := media_problem(video)) is not None:
            skipped.append(Skipped(stem, f"video: {problem}", video))
            continue
        audio = None
        if os.path.isdir(audio_dir):  # the WAV is the voice; without AudioWAV/ the flv's track
            audio = files.get("audio") or os.path.join(audio_dir, stem + ".wav")
            if (problem := media_problem(audio)) is not None:
                skipped.append(Skipped(stem, f"audio: {problem}", audio))
                continue
        clips.append(Clip(stem, CODES[m.group(3)], video=video, audio=audio,
                          perceived=summary.get(stem, {}), actor=m.group(1),
                          demographics=demographics.get(m.group(1), {})))
    if not clips and not skipped:
        raise ValueError(f"--data {root}: no .flv clips in VideoFlash/")
    return Dataset(tuple(clips), tuple(skipped), root)


#: Columns of a generic manifest (``id``, ``label`` and ``video`` required).
MANIFEST_COLUMNS = ("id", "label", "video", "audio", "perceived_voice", "perceived_face",
                    "perceived_multimodal", "actor")


def read_manifest(path) -> Dataset:
    """Clips of a CSV manifest: ``id``, ``label`` (name, code or letter), ``video`` (any container
    PyAV reads; its audio track is used when there is no ``audio``), optional ``audio`` and
    ``perceived_{voice,face,multimodal}`` (labels joined by ":" or "|") and ``actor`` (the unit
    the statistics resample; default: the CREMA-D actor id of a CREMA-D clip name, else the clip).
    Relative paths are relative to the manifest. Other columns are ignored; bad rows raise
    naming line and field."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"--manifest {path}: file does not exist")
    base = os.path.dirname(os.path.abspath(path))
    clips, skipped, seen = [], [], set()
    for line, row in _read_csv(path, ("id", "label", "video")):
        clip_id = (row["id"] or "").strip()
        if not clip_id or "/" in clip_id or clip_id in seen:
            raise ValueError(f"{path} line {line}, field 'id': "
                             f"{'duplicate' if clip_id in seen else 'invalid'} id {clip_id!r}")
        seen.add(clip_id)
        label = parse_label(row["label"] or "", f"{path} line {line}, field 'label'")
        media = {}
        for col in ("video", "audio"):
            value = (row.get(col) or "").strip()
            media[col] = ((value if os.path.isabs(value) else os.path.join(base, value))
                          if value else None)
        if media["video"] is None:
            raise ValueError(f"{path} line {line}, field 'video': empty")
        perceived = {c: parse_label_set(row.get(f"perceived_{c}") or "",
                                        f"{path} line {line}, field 'perceived_{c}'")
                     for c in PERCEPTION if (row.get(f"perceived_{c}") or "").strip()}
        problem = next(((col, p) for col in ("video", "audio")
                        if media[col] and (p := media_problem(media[col]))), None)
        if problem:
            skipped.append(Skipped(clip_id, f"{problem[0]}: {problem[1]}", media[problem[0]]))
            continue
        clips.append(Clip(clip_id, label, video=media["video"], audio=media["audio"],
                          perceived=perceived, actor=(row.get("actor") or "").strip() or None))
    if not clips and not skipped:
        raise ValueError(f"--manifest {path}: lists no clips")
    return Dataset(tuple(clips), tuple(skipped), path)


__all__ = ["KNOWN_BAD", "LFS_POINTER_PREFIX", "MANIFEST_COLUMNS", "PERCEPTION", "Clip", "Dataset",
           "Skipped", "media_problem", "parse_label", "parse_label_set", "read_cremad",
           "read_demographics", "read_manifest", "read_summary_table"]
