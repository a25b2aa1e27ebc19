"""Multi-host sweeps: one process per host, the mesh over the devices of all hosts.

Call ``init_multihost`` (``jax.distributed.initialize``) on every process first, then ``sweep``
with the same arguments on every process. Process 0 alone reads and writes the store (it need
not be on a shared file system): ``from_process_0`` gives its verdict on the store (an error, or
the finished chunks and their results) to every process, so every process computes the same
chunks or raises the same error; ``gather`` collects a sharded result on every process.
See docs/sweep.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from surrogate.sweeping.store import SweepStoreError

__all__ = ["from_process_0", "gather", "init_multihost"]

#: Bytes of an error message broadcast from process 0.
_MESSAGE_BYTES = 4096


def from_process_0(decide: Callable[[], Any], like):
    """``decide()`` run on process 0 and its result (a PyTree of NumPy arrays shaped like
    ``like``) given bit for bit to every process; an exception there is raised on every process
    (on the others as a ``SweepStoreError`` quoting it). ``decide()`` itself on one process."""
    if jax.process_count() == 1:
        return decide()
    from jax.experimental import multihost_utils

    message, error, out = np.zeros(_MESSAGE_BYTES, np.uint8), None, like
    if jax.process_index() == 0:
        try:
            out = decide()
        except Exception as err:  # noqa: BLE001 - every process must hear of it
            error = err
            text = f"{type(err).__name__}: {err}".encode()[:_MESSAGE_BYTES]
            message[: len(text)] = np.frombuffer(text, np.uint8)
    flat, treedef = jax.tree.flatten(out)
    raw = [np.ascontiguousarray(x).reshape(-1).view(np.uint8) for x in flat]  # psum of bytes
    message, raw = multihost_utils.broadcast_one_to_all((message, raw))
    if error is not None:
        raise error
    if message.any():
        text = bytes(message).rstrip(b"\0").decode(errors="replace")
        raise SweepStoreError(f"process 0: {text}")
    return jax.tree.unflatten(treedef, [np.array(r).view(x.dtype).reshape(x.shape)
                                        for r, x in zip(raw, flat, strict=True)])


def init_multihost(coordinator: str | None = None, num_processes: int | None = None,
                   process_id: int | None = None) -> None:
    """``jax.distributed.initialize`` for a multi-host sweep: call it on every process before
    anything else touches JAX. Arguments left None are detected from the cluster (SLURM,
    Open MPI, ...; JAX_COORDINATOR_ADDRESS for the address)."""
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def gather(x: jax.Array) -> np.ndarray:
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
