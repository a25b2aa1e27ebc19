"""surrogate: phase oscillators on a semantic network, coupled by attention (JAX only).

Public API: what a user calls (presets, simulate, metrics, sweep, Lyapunov and attractor
analysis, fit, bias); implementation and internals (``surrogate.model.rhs``, coupling tables,
``surrogate.rk4``, ...) in modules named for concepts. ``fused_simulate`` (the Pallas GPU
kernel) is imported on first
use, so ``import surrogate`` does not load Pallas or Triton.
"""

from surrogate.attractor import (
    CorrelationDimension,
    PhaseClusters,
    RecurrenceQuantification,
    Synchrony,
    correlation_dimension,
    cross_population_locking,
    locking_clusters,
    phase_clusters,
    recurrence_quantification,
    synchrony,
)
from surrogate.bias import (
    BalancePath,
    Couplings,
    Window,
    balance_couplings,
    couplings_of,
    cross_share_metric,
    dominance_metric,
    mean_attention,
    sensitivity,
    sensitivity_table,
    with_couplings,
)
from surrogate.fitting import (
    FitConfig,
    FitParams,
    FitResult,
    Target,
    combine_targets,
    fit,
    make_target,
    model_from_json,
)
from surrogate.batch import PhaseMeans, fold_batch, simulate_batch
from surrogate.echo import EchoDistance, echo_distance, phase_distance
from surrogate.integrate import RK4, FixedStep, Solution, fold, simulate
from surrogate.lyapunov import (
    LyapunovSpectrum,
    conditional_lyapunov_exponents,
    kaplan_yorke_dimension,
    lyapunov_spectrum,
    lyapunov_spectrum_map,
)
from surrogate.metrics import (
    cross_modal_share,
    dominance,
    dominance_index,
    kuramoto_order,
    modality_attention,
    modality_cross_share,
    order_parameter,
)
from surrogate.model import (
    Auto,
    Dense,
    Field,
    Params,
    Reference,
    Sparse,
    Surrogate,
    attention_weights,
    block_matrix,
    initial_phases,
    make_drive,
    paper_preset,
    replace,
    vector_field,
)
from surrogate.network import Network, build_network, from_adjacency
from surrogate.sweeping import Points, SweepStoreError, as_points, grid, init_multihost, sweep

__all__ = [
    "EchoDistance",
    "echo_distance",
    "phase_distance",
    "RK4",
    "FixedStep",
    "Field",
    "Reference",
    "Dense",
    "Sparse",
    "Auto",
    "Network",
    "Params",
    "Surrogate",
    "Solution",
    "attention_weights",
    "block_matrix",
    "build_network",
    "cross_modal_share",
    "dominance",
    "dominance_index",
    "fold",
    "PhaseMeans",
    "fused_simulate",
    "fold_batch",
    "simulate_batch",
    "from_adjacency",
    "initial_phases",
    "kuramoto_order",
    "make_drive",
    "modality_attention",
    "modality_cross_share",
    "order_parameter",
    "paper_preset",
    "replace",
    "simulate",
    "vector_field",
    "Points",
    "SweepStoreError",
    "as_points",
    "grid",
    "init_multihost",
    "sweep",
    "LyapunovSpectrum",
    "lyapunov_spectrum",
    "lyapunov_spectrum_map",
    "conditional_lyapunov_exponents",
    "kaplan_yorke_dimension",
    "CorrelationDimension",
    "correlation_dimension",
    "RecurrenceQuantification",
    "recurrence_quantification",
    "PhaseClusters",
    "phase_clusters",
    "locking_clusters",
    "cross_population_locking",
    "Synchrony",
    "synchrony",
    "BalancePath",
    "Couplings",
    "Window",
    "balance_couplings",
    "couplings_of",
    "cross_share_metric",
    "dominance_metric",
    "mean_attention",
    "sensitivity",
    "sensitivity_table",
    "with_couplings",
    "FitConfig",
    "FitParams",
    "FitResult",
    "Target",
    "combine_targets",
    "fit",
    "make_target",
    "model_from_json",
]


def __getattr__(name):
    if name == "fused_simulate":  # Pallas and Triton load only when the kernel is asked for
        from surrogate.kernels import fused_simulate

        return fused_simulate
    raise AttributeError(f"module 'surrogate' has no attribute {name!r}")
