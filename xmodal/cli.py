"""The ``xmodal`` command line: a thin dispatcher over ``xmodal.commands.<name>`` modules."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from xmodal import __version__

#: Subcommand modules under ``xmodal.commands``, in the order ``--help`` lists them.
COMMANDS = ("simulate", "lorenz", "probe", "lyapunov", "sweep", "emotion", "fit", "sensitivity")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xmodal",
        description="Physics-based surrogate of cross-modal attention in multimodal models.",
    )
    parser.add_argument("--version", action="version", version=f"xmodal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"xmodal.commands.{name}").register(sub)
    return parser


def _cpu_devices() -> None:
    """One JAX CPU device per available core (unless XLA_FLAGS says otherwise), so that sweeps,
    which shard over devices, use every core; single-threaded OpenBLAS under XLA's threads (see
    surrogate/__init__.py). Set before JAX starts its backends."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags or "jax" in sys.modules:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={cores or 1}".strip()


def main(argv: list[str] | None = None) -> int:
    _cpu_devices()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ValueError as err:  # bad values found after parsing (files, shapes): usage error
        parser.exit(2, f"xmodal {args.command}: error: {err}\n")


if __name__ == "__main__":
    sys.exit(main())
