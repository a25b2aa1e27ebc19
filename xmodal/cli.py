"""The ``xmodal`` command line: a thin dispatcher over ``xmodal.commands.<name>`` modules, and
the one place where errors become exit codes (``error_message``, ``main``)."""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import os
import sys

from threadpoolctl import threadpool_limits

from xmodal import __version__

#: Subcommand modules under ``xmodal.commands``, in the order ``--help`` lists them.
COMMANDS = ("simulate", "lorenz", "probe", "lyapunov", "sweep", "emotion", "fit", "sensitivity",
            "compare")

#: Commands that need an extra: (extra, the packages it provides that the command imports);
#: checked before the command runs.
NEEDS_EXTRA = {"probe": ("probe", ("torch", "transformers")),
               "emotion": ("probe", ("torch", "transformers", "soundfile", "av", "PIL")),
               "lorenz": ("lorenz", ("reservoirpy",))}  # its baselines, after the sweep
#: Commands that start JAX: its backend and flags are tried first (``check_jax_environment``).
JAX_COMMANDS = ("simulate", "lorenz", "lyapunov", "sweep", "fit", "sensitivity")
#: Commands whose result is printed on stdout: refused when it is closed.
STDOUT_COMMANDS = ("lyapunov",)
#: Python packages of the extras, for the message when an import fails anyway.
EXTRAS = {"torch": "probe", "transformers": "probe", "soundfile": "probe", "av": "probe",
          "PIL": "probe", "torchvision": "vision", "timm": "vision", "reservoirpy": "lorenz",
          "jsonschema": "test", "hypothesis": "test"}


def _missing(modules) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xmodal",
        description="Physics-based surrogate of cross-modal attention in multimodal models.",
    )
    parser.add_argument("--version", action="version", version=f"xmodal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:  # each module: HELP, DESCRIPTION, [PARSER], add_arguments(p), run(args)
        command = importlib.import_module(f"xmodal.commands.{name}")
        p = sub.add_parser(name, help=command.HELP, description=command.DESCRIPTION,
                           **getattr(command, "PARSER", {}))
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    for name, (extra, modules) in NEEDS_EXTRA.items():
        p = sub.choices[name]
        missing = _missing(modules)
        p.description = (p.description or "") + (
            f" Needs the {extra!r} extra (pip install 'xmodal[{extra}]')"
            + (f"; not installed here (missing: {', '.join(missing)})." if missing else "."))
    return parser


def _cpu_devices() -> None:
    """One JAX CPU device per available core (unless XLA_FLAGS sets a count), so that sweeps,
    which shard over devices, use every core. A JAX setting, not the environment: it takes
    effect only before JAX starts its backends (a program that imported JAX keeps its own)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags or "jax" in sys.modules:
        return
    import jax

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        jax.config.update("jax_num_cpu_devices", cores or 1)
    except RuntimeError:  # backends already started
        pass




def error_message(err: BaseException) -> str | None:
    """The one-line message of an error that is the user's input or environment (exit code 2),
    or None for anything else (a bug). The one place where errors become exit codes."""
    if isinstance(err, ImportError):
        top = (err.name or "").split(".")[0]
        extra = EXTRAS.get(top)
        if extra is not None:
            return (f"this command needs the Python package {top!r}, which is not installed; "
                    f"install the {extra!r} extra: pip install 'xmodal[{extra}]'")
        return f"cannot import {err.name or 'a module'} ({err})"
    if isinstance(err, MemoryError):
        return ("out of memory; reduce the sizes (grid points, oscillators, steps or saved "
                "frames)")
    if isinstance(err, OSError):  # unwritable or vanished paths, full disks, ...
        if isinstance(err, BrokenPipeError) or (err.filename is None and err.errno in (
                errno.EBADF, errno.ENOSPC, errno.EPIPE)):
            return f"cannot write the output to stdout ({err.strerror or err})"
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or err}"
    if isinstance(err, (ValueError, OverflowError)):  # bad values found after parsing
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    # JAX/XLA: no such backend, device out of memory, ...
    if isinstance(err, RuntimeError) and not isinstance(err, (NotImplementedError,
                                                              RecursionError)):
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
            return f"out of device memory; reduce the sizes ({text})"
        return text
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. Errors of input or environment end with a one-line message and exit
    code 2 (``error_message``), an interrupt with 130; an output directory the command created
    is removed again if it is still empty. ``XMODAL_TRACEBACK=1`` shows tracebacks instead."""
    _cpu_devices()
    parser = build_parser()
    from xmodal.report import forget_created_dirs, release_locks, remove_created_dirs

    args = parser.parse_args(argv)
    # before any work: a missing extra is one line, exit 2 (re-analysing a table needs none)
    if args.command in NEEDS_EXTRA and not getattr(args, "from_table", None):
        extra, modules = NEEDS_EXTRA[args.command]
        missing = _missing(modules)
        if missing:
            parser.exit(2, f"xmodal {args.command}: error: needs the {extra!r} extra, which is "
                           f"not installed (missing: {', '.join(missing)}); install it with "
                           f"pip install 'xmodal[{extra}]'\n")
    forget_created_dirs()
    try:
        from xmodal.report import check_jax_environment, check_stdout

        if args.command in STDOUT_COMMANDS:
            check_stdout()
        if args.command in JAX_COMMANDS:
            check_jax_environment()
        with threadpool_limits(1, user_api="blas"):  # BLAS threads under XLA's oversubscribe
            code = int(args.run(args) or 0)
        if sys.stdout is not None:
            sys.stdout.flush()  # a full disk or a closed pipe: said now, not lost at exit
    except KeyboardInterrupt:
        release_locks()
        remove_created_dirs()
        parser.exit(130, f"xmodal {args.command}: interrupted\n")
    except Exception as err:
        release_locks()
        remove_created_dirs()
        if os.environ.get("XMODAL_TRACEBACK"):
            raise
        msg = error_message(err)
        if msg is not None:
            parser.exit(2, f"xmodal {args.command}: error: {msg}\n")
        parser.exit(1, f"xmodal {args.command}: internal error: {type(err).__name__}: {err} "
                       f"(a bug; rerun with XMODAL_TRACEBACK=1 to see where)\n")
    release_locks()
    forget_created_dirs()
    return code


if __name__ == "__main__":
    sys.exit(main())
