"""Batch probing over a folder or a CSV manifest, with progress and resume.

Folder: files grouped by name stem (``clip1.wav`` + ``clip1.mp4`` -> item ``clip1``).
Manifest: a CSV with a header; column ``id`` (required) and any of ``audio``, ``video``,
``frames`` (a folder of images), ``image``, ``prompt``; relative paths are relative to the
manifest's folder. Each item writes ``<out_dir>/<id>.bundle``; an item whose bundle exists and
loads is skipped (resume).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import sys
from collections.abc import Callable, Sequence

from mllm_probe.bundle import BundleError, load_bundle
from mllm_probe.media import IMAGE_SUFFIXES

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
MANIFEST_COLUMNS = ("id", "audio", "video", "frames", "image", "prompt")


@dataclasses.dataclass(frozen=True)
class BatchItem:
    """One probe item: an id and its input files (paths or None) and optional prompt."""

    id: str
    audio: str | None = None
    video: str | None = None
    frames: str | None = None
    image: str | None = None
    prompt: str | None = None


def _checked_id(item_id: str, where: str) -> str:
    if not item_id or os.sep in item_id or item_id in (".", ".."):
        raise ValueError(f"{where}: invalid item id {item_id!r}")
    return item_id


def read_csv_rows(path, what: str = "manifest") -> tuple[list[str], list[tuple[int, dict]]]:
    """(columns, [(line, row)]) of a CSV file with a header; ValueError naming ``what``, the
    file and the line for bytes that are not UTF-8 or rows the CSV reader refuses."""
    where = f"{what} {os.fspath(path)!r}"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise ValueError(f"{where}: cannot read ({err.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(f"{where} line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x})"
                         ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = list(reader.fieldnames or [])
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as err:
        raise ValueError(f"{where} line {reader.line_num}: not a CSV row ({err})") from None
    return columns, rows


def read_manifest(path) -> list[BatchItem]:
    """Items of a CSV manifest; raises ValueError naming the file, line and column on bad rows."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"manifest {path!r} does not exist")
    base = os.path.dirname(os.path.abspath(path))
    items, seen = [], set()
    columns, rows = read_csv_rows(path)
    unknown = [c for c in columns if c not in MANIFEST_COLUMNS]
    if "id" not in columns or unknown:
        raise ValueError(f"manifest {path!r}: columns must include 'id' and be among "
                         f"{MANIFEST_COLUMNS}, got {columns}")
    for line, row in rows:
        item_id = _checked_id((row.get("id") or "").strip(), f"manifest {path!r} line {line}")
        if item_id in seen:
            raise ValueError(f"manifest {path!r} line {line}: duplicate id {item_id!r}")
        seen.add(item_id)
        fields = {}
        for col in ("audio", "video", "frames", "image"):
            value = (row.get(col) or "").strip()
            if value:
                full = value if os.path.isabs(value) else os.path.join(base, value)
                if not os.path.exists(full):
                    raise ValueError(f"manifest {path!r} line {line}, column {col!r}: "
                                     f"{value!r} does not exist")
                fields[col] = full
        if not fields:
            raise ValueError(f"manifest {path!r} line {line}: item {item_id!r} has no input")
        prompt = (row.get("prompt") or "").strip() or None
        items.append(BatchItem(item_id, prompt=prompt, **fields))
    if not items:
        raise ValueError(f"manifest {path!r} lists no items")
    return items


def scan_folder(path) -> list[BatchItem]:
    """Items of a folder: media files grouped by stem, in name order."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"input folder {path!r} does not exist")
    groups: dict[str, dict[str, str]] = {}
    for name in sorted(os.listdir(path)):
        stem, suffix = os.path.splitext(name)
        suffix = suffix.lower()
        kind = ("audio" if suffix in AUDIO_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES
                else "image" if suffix in IMAGE_SUFFIXES else None)
        if kind is None:
            continue
        group = groups.setdefault(stem, {})
        if kind in group:
            raise ValueError(f"input folder {path!r}: two {kind} files for item {stem!r}")
        group[kind] = os.path.join(path, name)
    if not groups:
        raise ValueError(f"input folder {path!r} holds no audio, video or image files")
    return [BatchItem(stem, **files) for stem, files in groups.items()]


def is_done(bundle_path: str) -> bool:
    """True if a valid bundle already exists at ``bundle_path``."""
    if not os.path.isfile(bundle_path):
        return False
    try:
        load_bundle(bundle_path)
    except BundleError:
        return False
    return True


def run_batch(items: Sequence[BatchItem], out_dir, probe_one: Callable[[BatchItem, str], None],
              *, log=sys.stderr) -> dict[str, list[str]]:
    """Call ``probe_one(item, bundle_path)`` for each item not done yet, with progress on ``log``
    (``surrogate.progress.Progress``: skipped and failed items named, a bar or count lines).

    Returns {"done": [...], "skipped": [...], "failed": [...]} by item id; a failing item is
    reported and the batch goes on.
    """
    from surrogate.progress import Progress

    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    report = {"done": [], "skipped": [], "failed": []}
    n = len(items)
    with Progress(n, desc="probe", unit="items", stream=log) as progress:
        for i, item in enumerate(items, start=1):
            target = os.path.join(out_dir, f"{item.id}.bundle")
            if is_done(target):
                report["skipped"].append(item.id)
                progress.say(f"[{i}/{n}] {item.id}: already done, skipped")
            else:
                try:
                    probe_one(item, target)
                    report["done"].append(item.id)
                except (ValueError, RuntimeError, OSError) as err:
                    report["failed"].append(item.id)
                    progress.say(f"[{i}/{n}] {item.id}: FAILED: {err}")
            progress.update()
    return report


__all__ = ["BatchItem", "is_done", "read_csv_rows", "read_manifest", "run_batch",
           "scan_folder"]
