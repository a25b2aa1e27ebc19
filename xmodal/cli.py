"""The ``xmodal`` command line: a thin dispatcher over ``xmodal.commands.<name>`` modules."""

from __future__ import annotations

import argparse
import importlib
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ValueError as err:  # bad values found after parsing (files, shapes): usage error
        parser.exit(2, f"xmodal {args.command}: error: {err}\n")


if __name__ == "__main__":
    sys.exit(main())
