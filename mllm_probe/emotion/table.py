"""The predictions table: one CSV row per clip x condition x prompt variant, appended per unit.

A *unit* is one clip x condition: all its variant rows are written by one ``write`` call and
fsync'ed. ``predictions.meta.json`` beside the table holds the run configuration. Resuming checks
that configuration (a table from another configuration is refused, naming the differing fields),
cuts a torn last line, drops units with missing rows (rewriting the table atomically) and reports
the units already done, so a killed run continues without duplicate or missing rows.

Scores are log-probabilities in nats (``repr`` of the float, empty where the label is forbidden).
``tokens_text/audio/vision/special``: positions of each modality in the unit's media prefix (the
same for all its variants); ``tokens_prompt``: positions of the whole prompt of the variant.
``actor``: the clip's actor (CREMA-D id or manifest column; empty if unknown);
``intervention``: the run's attention interventions (`mllm_probe.intervention`, '' for none).
Columns in `OPTIONAL_COLUMNS` came later: tables without them stay readable (and resumable).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict

import numpy as np

from mllm_probe.emotion.prompts import LABELS
from mllm_probe.emotion.tokens import COLUMNS as TOKEN_COLUMNS

SCORE_COLUMNS = tuple(f"score_{label}" for label in LABELS)
COLUMNS = ("clip", "condition", "variant", "forbidden", "intended", "perceived", "predicted",
           *SCORE_COLUMNS, *TOKEN_COLUMNS, "generated", "generated_label", "parse_status",
           "actor", "intervention")
#: Columns a table written by an earlier version may lack (read as empty).
OPTIONAL_COLUMNS = ("actor", "intervention")
META_SUFFIX = ".meta.json"


def _meta_path(path: str) -> str:
    return os.path.splitext(path)[0] + META_SUFFIX


def _format(value) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else repr(value)
    if isinstance(value, (np.floating,)):
        return _format(float(value))
    return str(value).replace("\r", "\\r").replace("\n", "\\n")  # one record per line


class PredictionTable:
    """Append-only, resumable CSV of predictions (see the module docstring).

    ``config``: JSON-able description of the run; ``rows_per_unit``: variant rows of one unit.
    """

    def __init__(self, path, config: dict, rows_per_unit: int, *, resume: bool):
        self.path = os.fspath(path)
        self.config = json.loads(json.dumps(config))
        self.rows_per_unit = rows_per_unit
        self.done: set[tuple[str, str]] = set()
        self.dropped_rows = 0
        meta = _meta_path(self.path)
        if os.path.exists(self.path):
            if not resume:
                raise ValueError(f"{self.path} exists: pass --resume to continue that run, or "
                                 f"choose another --out")
            self._check_config(meta)
            self._repair()
        else:
            _write_atomic(meta, json.dumps(self.config, indent=2, sort_keys=True) + "\n")
            _write_atomic(self.path, ",".join(COLUMNS) + "\n")

    def _check_config(self, meta: str) -> None:
        if not os.path.isfile(meta):
            raise ValueError(f"{self.path}: no {os.path.basename(meta)} beside it; it was not "
                             f"written by `xmodal emotion` (use another --out)")
        try:
            with open(meta) as f:
                old = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta}: invalid JSON ({err})") from err
        diff = sorted(k for k in set(old) | set(self.config) if old.get(k) != self.config.get(k))
        if diff:
            details = "; ".join(f"{k}: {old.get(k)!r} there, {self.config.get(k)!r} now"
                                for k in diff[:4])
            raise ValueError(f"{self.path} comes from another configuration ({details}); "
                             f"use another --out or the same options")

    def _repair(self) -> None:
        with open(self.path, "rb") as f:
            data = f.read()
        cut = data.rfind(b"\n") + 1
        text = data[:cut].decode("utf-8", errors="replace")
        rows = list(csv.DictReader(io.StringIO(text)))
        header = text.split("\n", 1)[0].split(",")
        if header != list(COLUMNS) and _legacy(header):
            cut = -1   # rewritten below with the current header
        elif header != list(COLUMNS):
            raise ValueError(f"{self.path}: header {header} differs from {list(COLUMNS)}")
        units = defaultdict(list)
        for row in rows:
            units[(row["clip"], row["condition"])].append(row)
        complete = {u for u, r in units.items()
                    if len(r) == self.rows_per_unit
                    and len({x["variant"] for x in r}) == self.rows_per_unit}
        keep = [row for row in rows if (row["clip"], row["condition"]) in complete]
        self.dropped_rows = len(rows) - len(keep)
        if self.dropped_rows or cut != len(data):
            out = io.StringIO()
            writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(keep)
            _write_atomic(self.path, out.getvalue())
        self.done = complete

    def append(self, rows: list[dict]) -> None:
        """Write the rows of one unit in one call, then flush and fsync."""
        units = {(r["clip"], r["condition"]) for r in rows}
        if len(units) != 1 or len(rows) != self.rows_per_unit:
            raise ValueError(f"append one unit of {self.rows_per_unit} rows, got {len(rows)} rows "
                             f"of units {sorted(units)}")
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for row in rows:
            row = {"intervention": self.config.get("intervention", ""), **row}
            writer.writerow([_format(row.get(c, "")) for c in COLUMNS])
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(out.getvalue())
            f.flush()
            os.fsync(f.fileno())
        self.done |= units


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _legacy(header: list[str]) -> bool:
    """A header of an earlier version: the columns in order, some optional ones missing."""
    return (header == [c for c in COLUMNS if c in header]
            and set(COLUMNS) - set(header) <= set(OPTIONAL_COLUMNS))


def read_table(path) -> list[dict]:
    """Rows of a predictions table; `OPTIONAL_COLUMNS` it lacks read as empty, columns it does
    not know are kept (ValueError naming the file and the missing columns)."""
    path = os.fspath(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])
                   and c not in OPTIONAL_COLUMNS]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing} (a predictions table of "
                             f"`xmodal emotion` has {list(COLUMNS)})")
        absent = {c: "" for c in OPTIONAL_COLUMNS if c not in (reader.fieldnames or [])}
        return [{**row, **absent} for row in reader]


def label_set(text: str) -> frozenset[str]:
    return frozenset(p for p in (text or "").split(":") if p)


__all__ = [
    "COLUMNS",
    "META_SUFFIX",
    "OPTIONAL_COLUMNS",
    "SCORE_COLUMNS",
    "PredictionTable",
    "label_set",
    "read_table",
]
