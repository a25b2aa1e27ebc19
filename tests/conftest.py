"""Test configuration: float64 is enabled for the whole session, and implicit rank promotion
raises.

Functions in this project follow the dtype of their inputs, so float32 tests pass float32 arrays
explicitly; references (finite differences, published values) are checked in float64.
Broadcasts between arrays of different ranks are written out (``x[None, :]``, ``x[..., None]``).
Warnings are errors (pyproject.toml, ``filterwarnings``).
"""

import os

# OpenBLAS threads under XLA's oversubscribe the cores (the CLI limits them with threadpoolctl)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
