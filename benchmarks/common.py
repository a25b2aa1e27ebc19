"""What the benchmark scripts that shard over devices share: ``--cpu-devices`` and the start that
puts the repository on ``sys.path`` and sets the device count before JAX starts its backends."""

from __future__ import annotations

import argparse
import os
import sys


def add_cpu_devices(p: argparse.ArgumentParser) -> None:
    """``--cpu-devices N``: simulate N CPU devices (default: JAX's, one)."""
    p.add_argument("--cpu-devices", type=int, default=None,
                   help="simulate this many CPU devices (before JAX starts)")


def start(args: argparse.Namespace) -> None:
    """The repository on ``sys.path``; ``args.cpu_devices`` CPU devices. Call before importing
    the project (and before JAX starts a backend)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if args.cpu_devices:
        import jax

        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
