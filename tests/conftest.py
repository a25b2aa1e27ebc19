"""Test configuration: float64 is enabled for the whole session.

Functions in this project follow the dtype of their inputs, so float32 tests pass float32 arrays
explicitly; references (finite differences, published values) are checked in float64.
"""

import os

# as xmodal.cli does: OpenBLAS threads under XLA oversubscribe the cores
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
