"""Files the CLI tests share: a small valid attention bundle and a strict JSON reader."""

import json
from pathlib import Path

import numpy as np


def _refuse(constant):
    raise ValueError(f"not strict JSON: {constant}")


def strict_load(text: str):
    """Python's json with NaN/Infinity refused, as other languages' parsers do."""
    return json.loads(text, parse_constant=_refuse)


def write_bundle(path: Path) -> None:
    """A small valid attention bundle: 3 layers, 2 heads, audio and vision rows."""
    from mllm_probe.bundle import make_bundle, save_bundle

    block = np.zeros((3, 2, 4, 4), np.float32)
    block[:, 0, 1] = [0.2, 0.6, 0.2, 0.0]
    block[:, 1, 1] = [0.0, 0.4, 0.4, 0.2]
    block[:, :, 2] = [0.5, 0.25, 0.25, 0.0]
    block[:, :, 0] = [1.0, 0.0, 0.0, 0.0]
    block[:, :, 3] = [0.0, 0.0, 0.0, 1.0]
    tm = np.array([0, 0, 1, 1, 1, 2, 2])
    save_bundle(path, make_bundle(block, ("text", "audio", "vision", "special"),
                                  ("full_attention",) * 3, tm, np.arange(2, 7)))


def run_cli(argv, capsys):
    """(exit code, stdout, stderr) of ``xmodal.cli.main(argv)`` run in this process."""
    from xmodal.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err
