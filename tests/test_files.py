"""surrogate.files, the one I/O module: strict JSON (non-finite numbers as null, recorded where),
atomic writes; and the layering it serves (lorenz/ and surrogate/ never import xmodal/)."""

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest

from surrogate.files import atomic_write, strict_json, strict_json_dumps, write_strict_json

ROOT = Path(__file__).resolve().parents[1]


def _refuse(constant):
    raise ValueError(constant)


def test_non_finite_numbers_become_null_and_are_recorded(tmp_path):
    obj = {"a": 1.5, "b": [0.0, math.nan, {"c": math.inf}], "d": np.array([[1.0, -np.inf]]),
           "e": np.float32("nan"), "f": (1, 2), "g": True, "h": None, "i": np.int64(7)}
    where = write_strict_json(tmp_path / "x.json", obj)
    assert where == {"/b/1": "nan", "/b/2/c": "inf", "/d/0/1": "-inf", "/e": "nan"}
    back = json.loads((tmp_path / "x.json").read_text(), parse_constant=_refuse)
    assert back["b"] == [0.0, None, {"c": None}] and back["d"] == [[1.0, None]]
    assert back["e"] is None and back["f"] == [1, 2] and back["g"] is True and back["i"] == 7
    assert back["non_finite"] == where and back["a"] == 1.5
    with pytest.raises(ValueError):  # what Python's own json would have written
        json.loads(json.dumps(obj["b"]), parse_constant=_refuse)


def test_finite_objects_are_written_unchanged():
    obj = {"x": [1.0, 2.5e300, -0.0], "y": {"z": "NaN as text stays text"}}
    text, where = strict_json_dumps(obj)
    assert where == {} and json.loads(text) == obj and "non_finite" not in text


def test_top_level_list_and_scalar():
    assert strict_json([math.nan, 1.0]) == ([None, 1.0], {"/0": "nan"})
    assert strict_json(math.inf) == (None, {"": "inf"})  # the pointer of the whole document
    text, where = strict_json_dumps([math.inf])
    assert json.loads(text) == [None] and where == {"/0": "inf"}  # no room for a record
    # keys with "/" and "~" are escaped (RFC 6901), brackets are plain characters
    assert strict_json({"a/b": {"c~[0]": math.nan}})[1] == {"/a~1b/c~0[0]": "nan"}
    with pytest.raises(TypeError, match="/a/b: object is not JSON-serialisable"):
        strict_json({"a": {"b": object()}})


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")

    def fail(f):
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


@pytest.mark.parametrize("package", ["lorenz", "surrogate"])
def test_lower_layers_do_not_import_the_cli(package):
    """lorenz/ and surrogate/ import no xmodal (the front end); file helpers come from
    surrogate.files."""
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names
                          if n == "xmodal" or n.startswith("xmodal.")]
    assert offenders == []
