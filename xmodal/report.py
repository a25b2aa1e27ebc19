"""What the subcommands share around their computation: the output-directory policy, the checks
made before a computation (writable outputs, memory and step estimates, seeds, addresses),
strict-JSON and atomic writes (from ``surrogate.files``, the one I/O module), versions.

Output directories, one rule for every command: ``--out`` may be missing or empty; an existing
non-empty one is refused unless ``--force`` (overwrite) or, for commands that can continue a
run, ``--resume``. The directory is checked (a probe file is written and removed) before any
work, and a directory the command created is removed again if the command fails before writing
anything into it (``remove_created_dirs``, called by ``xmodal.cli.main``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from surrogate.files import (
    atomic_savefig,
    atomic_write_bytes,
    atomic_write_npz,
    strict_json_dumps,
    write_strict_json,
)

__all__ = [
    "atomic_savefig",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_npz",
    "check_coordinator",
    "check_figure_format",
    "check_jax_environment",
    "check_memory",
    "check_out_file",
    "check_steps",
    "check_torch_device",
    "check_stdout",
    "dumps_json",
    "prepare_out",
    "forget_created_dirs",
    "hold_lock",
    "release_locks",
    "remove_created_dirs",
    "remove_store",
    "store_lock",
    "versions",
    "warn_non_finite_arrays",
]

#: Directories created by ``prepare_out`` in this process, outermost first.
_CREATED: list[Path] = []

#: Largest step count of a single integration (the step counters of the compiled loops).
MAX_STEPS = 2**31 - 1
#: Longest file or folder name, in bytes (Linux, macOS, Windows file systems).
NAME_MAX = 255


def _probe_writable(folder: Path, arg: str, given: Path | None = None) -> None:
    """Write and remove a probe file in ``folder``: ValueError naming ``arg`` if impossible."""
    probe = folder / f".xmodal-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        where = "there" if given is None else f"in {folder}"
        raise ValueError(f"{arg} {given or folder}: cannot write {where} ({err.strerror})"
                         ) from None


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _check_name_lengths(path: Path, arg: str) -> None:
    """ValueError naming ``arg`` if a component of ``path`` is longer than file systems allow
    (checked first: the OS then refuses even to look the path up)."""
    for part in path.parts:
        n = len(os.fsencode(part))
        if n > NAME_MAX:
            raise ValueError(f"{arg} {path}: a name in it has {n} bytes, more than the "
                             f"{NAME_MAX} a file system allows")


def prepare_out(path, *, force: bool = False, resume: bool | None = None,
                arg: str = "--out") -> Path:
    """The policy above for ``arg`` = ``path``: ValueError naming it when refused or not
    writable, else the directory (created, with its parents, when missing). ``resume`` None:
    the command has no ``--resume``."""
    path = Path(path)
    _check_name_lengths(path, arg)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise ValueError(f"{arg} {path}: exists and is not a directory")
        if not (force or resume) and any(p.name != LOCK_FILE for p in path.iterdir()):
            how = ("pass --resume to continue the run in it or --force to start over"
                   if resume is not None else "pass --force to overwrite its files")
            raise ValueError(f"{arg} {path}: exists and is not empty; {how}, or choose "
                             f"another directory")
        _probe_writable(path, arg)
        return path
    base = _nearest_existing(path)
    if not base.is_dir():
        raise ValueError(f"{arg} {path}: {base} is not a directory")
    _probe_writable(base, arg, path)
    missing = []
    p = path.absolute()
    while p != base:
        missing.append(p)
        p = p.parent
    try:  # exist_ok: the other processes of a multi-host run may have just made it
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{arg} {path}: cannot create directory ({err.strerror})") from None
    _CREATED.extend(reversed(missing))
    return path


def remove_created_dirs() -> list[Path]:
    """Remove the directories ``prepare_out`` created that are still empty (innermost first);
    a directory holding anything is kept. Returns the removed ones."""
    removed = []
    while _CREATED:
        d = _CREATED.pop()
        try:
            d.rmdir()
            removed.append(d)
        except OSError:  # not empty (partial results kept, e.g. a resumable store) or gone
            pass
    return removed


def remove_store(path) -> None:
    """Discard a resumable store (``--force`` without ``--resume``): a sweep store is a
    directory with a manifest.json; anything else there is refused, not deleted."""
    import shutil

    path = Path(path)
    if not path.exists():
        return
    if not (path.is_dir() and (path / "manifest.json").is_file()):
        raise ValueError(f"--force: {path} is not a sweep store (no manifest.json); "
                         f"remove it yourself or choose another --out")
    shutil.rmtree(path)


def forget_created_dirs() -> None:
    """The command succeeded: the directories it created are its outputs."""
    _CREATED.clear()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.absolute() == Path(b).absolute()


def check_out_file(path, arg: str, inputs=()) -> Path:
    """A file to be written at the end (e.g. ``--plot``): its folder must exist and be
    writable; it must not be a directory, a device or other non-regular file, a name too long
    for the file system, or one of ``inputs`` (``(option, path)`` pairs: the command's own input
    files). Checked before the computation."""
    path = Path(path)
    _check_name_lengths(path, arg)
    if path.is_dir():
        raise ValueError(f"{arg} {path}: is a directory; give a file name")
    if path.exists() and not path.is_file():
        raise ValueError(f"{arg} {path}: exists and is not a regular file (a device, pipe or "
                         f"socket); give a file name")
    for what, given in inputs:
        if given is not None and path.exists() and _same_file(path, Path(given)):
            raise ValueError(f"{arg} {path}: is the input of {what}; writing it would "
                             f"overwrite the input, choose another file")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"{arg} {path}: folder {folder} does not exist")
    _probe_writable(folder, arg, path)
    return path


def check_figure_format(path, arg: str) -> None:
    """The suffix of the figure file ``path`` names a format Matplotlib writes (none: png)."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if not suffix:
        return
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix not in formats:
        raise ValueError(f"{arg} {path}: unknown figure format {suffix!r}; use one of "
                         f"{', '.join(sorted(formats))}")


def check_stdout(what: str = "the result") -> None:
    """ValueError if standard output is closed (Python sets ``sys.stdout`` to None then), for a
    command whose result goes there: said before the work. A full disk or a broken pipe is
    found when ``xmodal.cli.main`` flushes it at the end (exit 2 as well)."""
    if sys.stdout is None:
        raise ValueError(f"standard output is closed, and {what} is printed there; "
                         f"redirect it to a file (> FILE)")


@contextlib.contextmanager
def store_lock(out, what: str = "--out"):
    """Hold an exclusive lock on the run folder ``out`` (``out/.xmodal.lock``, fcntl) while a
    run writes there: a second writer of the same folder gets ValueError naming ``what`` and
    the holder's process id; the lock file goes away with the run. Advisory: every xmodal
    command that writes a store takes it."""
    import fcntl

    path = Path(out) / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ValueError(f"{what} {out}: cannot create the lock file {LOCK_FILE} "
                             f"({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ValueError(f"{what} {out}: another xmodal process (pid {holder}) is writing "
                             f"there; wait for it to finish or choose another directory "
                             f"(--force does not delete a folder in use)") from None
        try:  # the file may have been removed by the holder that released it meanwhile
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        Path(path).unlink(missing_ok=True)
        os.close(fd)


#: The lock file of a run folder (``store_lock``).
LOCK_FILE = ".xmodal.lock"

#: Locks taken with ``hold_lock`` in this process, released by ``release_locks``.
_HELD = contextlib.ExitStack()


def hold_lock(out, what: str = "--out") -> Path:
    """``store_lock(out, what)`` held until the command ends (``xmodal.cli.main`` calls
    ``release_locks``): one line after ``prepare_out`` in a command that writes a run folder."""
    return _HELD.enter_context(store_lock(out, what))


def release_locks() -> None:
    """Release the locks of ``hold_lock`` (and remove their lock files)."""
    _HELD.close()


#: Results of ``check_jax_environment``'s child process, per environment.
_JAX_CHECKED: dict = {}

_JAX_PROBE = """
import json, sys
try:
    import jax
    if sys.argv[1]:
        jax.config.update("jax_platforms", sys.argv[1])
    print(json.dumps({"platform": jax.devices()[0].platform}))
except BaseException as err:
    print(json.dumps({"error": type(err).__name__ + (f": {err}" if str(err) else "")}))
"""


def _user_xla_flags() -> list[str]:
    return [f for f in os.environ.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")]


def check_jax_environment(platform: str | None = None, arg: str = "--device") -> None:
    """JAX can start here with the ``platform`` asked for (None: the default) under this
    process's ``JAX_PLATFORMS`` and ``XLA_FLAGS``: ValueError naming the option or variable
    otherwise, before any output exists. JAX raises a bare AssertionError for a platform that
    is not there and XLA aborts the process on a bad flag, so the start is tried in a child
    process (about 1.5 s; only when the platform, ``JAX_PLATFORMS`` or ``XLA_FLAGS`` is set
    to something other than the CPU defaults; once per environment)."""
    import json
    import re
    import subprocess

    env_platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    flags = _user_xla_flags()
    if platform in (None, "cpu") and env_platforms in ("", "cpu") and not flags:
        return
    key = (platform, env_platforms, os.environ.get("XLA_FLAGS", ""))
    if key not in _JAX_CHECKED:
        try:
            proc = subprocess.run([sys.executable, "-c", _JAX_PROBE, platform or ""],
                                  capture_output=True, text=True, timeout=300)
            _JAX_CHECKED[key] = (proc.returncode, proc.stdout, proc.stderr)
        except (OSError, subprocess.TimeoutExpired) as err:
            _JAX_CHECKED[key] = (None, "", str(err))
    code, stdout, stderr = _JAX_CHECKED[key]
    try:
        result = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        result = None
    if result is None:  # XLA aborted (a glog fatal line "F1203 06:16:29.8 5595 file.cc:234] msg")
        lines = [re.sub(r"^[FEW]\d{4} [\d:.]+\s+\d+ \S+\] ", "", line).strip()
                 for line in stderr.splitlines() if line.strip()]
        why = next((line for line in reversed(lines) if "XLA_FLAGS" in line),
                   lines[-1] if lines else f"exit code {code}")
        if flags:
            raise ValueError(f"environment variable XLA_FLAGS={' '.join(flags)!r}: XLA cannot "
                             f"start with it ({why})")
        raise ValueError(f"JAX cannot start here ({why})")
    if "error" in result:
        why = result["error"]
        if why == "AssertionError":
            why = "no such backend in this jaxlib, or no device for it"
        if platform is not None:
            raise ValueError(f"{arg}: no such JAX backend here ({why})")
        raise ValueError(f"environment variable JAX_PLATFORMS={env_platforms!r}: JAX cannot "
                         f"start that backend here ({why}); unset it or set JAX_PLATFORMS=cpu")


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} EB"


def check_memory(n_bytes: float, what: str, *, fraction: float = 0.8) -> None:
    """ValueError if ``what`` (a phrase naming the arguments) needs more than ``fraction`` of the
    available memory: checked from an estimate before allocating anything."""
    have = available_memory()
    if have is not None and n_bytes > fraction * have:
        raise ValueError(f"{what} needs about {_size(n_bytes)} of memory, more than this "
                         f"machine has available ({_size(have)})")


def check_steps(n_steps: int, what: str, *, limit: int = MAX_STEPS) -> int:
    """ValueError if an integration of ``n_steps`` steps exceeds the step counters."""
    if n_steps > limit:
        raise ValueError(f"{what} gives {n_steps:.4g} steps, more than {limit} (the limit of "
                         f"one integration's step counter)")
    return n_steps


def check_coordinator(text: str | None, *, process_id: int | None = None,
                      wait_s: float = 0.0, arg: str = "--coordinator") -> None:
    """``HOST:PORT`` with a port in 1..65535 and a host that resolves. With ``wait_s``, also what
    the distributed start needs, so that it fails with a message instead of waiting forever or
    aborting the process: process 0 must be able to listen on the port; any other process waits
    up to ``wait_s`` seconds for a coordinator to accept connections there."""
    if text is None:
        return
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{arg} {text!r}: expected HOST:PORT")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{arg} {text!r}: port must be an integer in 1..65535")
    port = int(port)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    import socket
    import time

    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as err:
        raise ValueError(f"{arg} {text!r}: host {host!r} does not resolve ({err})") from None
    if not wait_s:
        return
    if process_id in (None, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("", port))
            except OSError as err:
                raise ValueError(f"{arg} {text!r}: process 0 cannot listen on port {port} "
                                 f"({err.strerror})") from None
        return
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError as err:
            if time.monotonic() > deadline:
                raise ValueError(f"{arg} {text!r}: no coordinator (process 0) accepts "
                                 f"connections there after {wait_s:g} s ({err.strerror or err})"
                                 ) from None
            time.sleep(0.5)


def check_torch_device(text: str, arg: str = "--device") -> None:
    """A torch device that exists here ("auto": accelerate's placement over what there is):
    ValueError naming ``arg`` otherwise, before a model is loaded."""
    if text == "auto":
        import importlib.util

        if importlib.util.find_spec("accelerate") is None:
            raise ValueError(f"{arg} auto: needs the Python package 'accelerate' (transformers "
                             f"places the model with it); pip install 'xmodal[probe]'")
        return
    if text == "cpu":
        return
    import torch

    def first(err):
        return (str(err).strip().splitlines() or [type(err).__name__])[0]

    try:
        device = torch.device(text)
    except RuntimeError as err:
        raise ValueError(f"{arg} {text!r}: not a torch device ({first(err)})") from None
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as err:
        raise ValueError(f"{arg} {text}: not available here ({first(err)})") from None


def _warn_non_finite(name: str, where: dict[str, str]) -> None:
    """One stderr line: which fields (array elements grouped) were non-finite."""
    if not where:
        return
    import re

    groups: dict[str, dict[str, int]] = {}
    for key, word in where.items():
        field = re.sub(r"/\d+(?=/|$)", "/*", key) or "/"
        groups.setdefault(field, {}).setdefault(word, 0)
        groups[field][word] += 1
    listed = ", ".join(f"{field} ({', '.join(f'{n} {w}' for w, n in words.items())})"
                       for field, words in list(groups.items())[:8])
    more = f" and {len(groups) - 8} more fields" if len(groups) > 8 else ""
    print(f"xmodal: warning: {name}: {len(where)} non-finite value(s) written as null "
          f"(listed under \"non_finite\"): {listed}{more}", file=sys.stderr)


def warn_non_finite_arrays(name: str, arrays: dict) -> dict[str, int]:
    """Say on stderr which arrays (e.g. the metrics in an .npz) hold non-finite values, and how
    many of how many; returns {name: count} of those that do."""
    import numpy as np

    counts = {}
    for key, v in arrays.items():
        v = np.asarray(v)
        if v.dtype.kind in "fc":
            bad = int(np.count_nonzero(~np.isfinite(v)))
            if bad:
                counts[key] = bad
    if counts:
        listed = ", ".join(f"{k} ({n} of {np.asarray(arrays[k]).size})"
                           for k, n in counts.items())
        print(f"xmodal: warning: {name}: non-finite values (NaN/inf) in {listed}",
              file=sys.stderr)
    return counts


def atomic_write_json(path: Path, obj) -> dict[str, str]:
    """Strict JSON (non-finite numbers as null, recorded in the file), atomically; says on
    stderr where non-finite values were. Returns their locations."""
    where = write_strict_json(path, obj)
    _warn_non_finite(str(path), where)
    return where


def dumps_json(obj, name: str = "output") -> str:
    """Strict JSON text of ``obj`` for stdout; warns on stderr about non-finite values."""
    text, where = strict_json_dumps(obj)
    _warn_non_finite(name, where)
    return text


def versions() -> dict[str, str]:
    """Versions of Python and the scientific stack, for results files."""
    out = {"python": platform.python_version()}
    for name in ("xmodal", "jax", "jaxlib", "diffrax", "equinox", "flax", "optax", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out
