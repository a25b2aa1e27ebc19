"""surrogate: phase oscillators on a semantic network, coupled by attention (JAX only).

Public API (``__all__``, at most 40 names): the model, its strategies, integration, the common
measurements, sweep, fit and sensitivity. The families of analysis are namespaces, one import
path each: ``surrogate.attractor`` (synchrony, clusters, recurrence, correlation dimension),
``surrogate.lyapunov`` (spectra of maps, Kaplan-Yorke), ``surrogate.metrics``,
``surrogate.bias`` (couplings, balance paths), ``surrogate.sweeping`` (points, stores),
``surrogate.fitting`` (targets, identifiability), ``surrogate.echo``. ``fused_simulate`` (the
Pallas GPU kernel) is imported on first use, so ``import surrogate`` does not load Pallas or
Triton.
"""

from surrogate import attractor as attractor
from surrogate import bias as bias
from surrogate import echo as echo
from surrogate import fitting as fitting
from surrogate import lyapunov as lyapunov
from surrogate import metrics as metrics
from surrogate import response as response
from surrogate import sweeping as sweeping
from surrogate.batch import EdgePairs, edge_pairs, fold_batch, simulate_batch
from surrogate.bias import sensitivity
from surrogate.coupling import Fixed, Tied, block_matrix
from surrogate.echo import echo_distance
from surrogate.fitting import FitConfig, FitResult, Target, fit
from surrogate.integrate import RK4, FixedStep, Solution, fold, simulate
from surrogate.lyapunov import conditional_lyapunov_exponents, lyapunov_spectrum
from surrogate.metrics import cross_modal_share, dominance, modality_attention, order_parameter
from surrogate.model import (
    Auto,
    Dense,
    Params,
    Reference,
    Sparse,
    Surrogate,
    attention_weights,
    initial_phases,
    make_drive,
    paper_preset,
    replace,
    vector_field,
)
from surrogate.network import Network, build_network, from_adjacency
from surrogate.sweeping import grid, sweep

__all__ = [
    # the model
    "Network",
    "build_network",
    "from_adjacency",
    "Params",
    "Surrogate",
    "paper_preset",
    "replace",
    "initial_phases",
    "make_drive",
    "vector_field",
    "attention_weights",
    "block_matrix",
    # strategies: field evaluation, coupling reading, solver
    "Reference",
    "Dense",
    "Sparse",
    "Auto",
    "Tied",
    "Fixed",
    "FixedStep",
    "RK4",
    # integration
    "simulate",
    "fold",
    "simulate_batch",
    "fold_batch",
    "EdgePairs",
    "edge_pairs",
    "fused_simulate",
    "Solution",
    # measurements
    "modality_attention",
    "cross_modal_share",
    "dominance",
    "order_parameter",
    "echo_distance",
    "lyapunov_spectrum",
    "conditional_lyapunov_exponents",
    # experiments
    "sweep",
    "grid",
    "fit",
    "FitConfig",
    "FitResult",
    "Target",
    "sensitivity",
]


def __getattr__(name):
    if name == "fused_simulate":  # Pallas and Triton load only when the kernel is asked for
        from surrogate.kernels import fused_simulate

        return fused_simulate
    raise AttributeError(f"module 'surrogate' has no attribute {name!r}")
