"""surrogate: phase oscillators on a semantic network, coupled by attention (JAX only).

Public API; implementation in modules named for concepts (network, model, integrate, metrics).
"""

from surrogate.integrate import RK4, SPARSE_BELOW, Trajectory, fold, resolve_kind, simulate
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
    NORMALISATIONS,
    CouplingTables,
    Params,
    Surrogate,
    attention_weights,
    block_matrix,
    coupling_tables,
    initial_phases,
    make_drive,
    paper_preset,
    replace,
    rhs,
    vector_field,
)
from surrogate.network import Network, build_network, cross_links, from_adjacency, watts_strogatz

__all__ = [
    "NORMALISATIONS",
    "CouplingTables",
    "RK4",
    "SPARSE_BELOW",
    "Network",
    "Params",
    "Surrogate",
    "Trajectory",
    "attention_weights",
    "block_matrix",
    "build_network",
    "coupling_tables",
    "cross_links",
    "cross_modal_share",
    "dominance",
    "dominance_index",
    "fold",
    "from_adjacency",
    "initial_phases",
    "kuramoto_order",
    "make_drive",
    "modality_attention",
    "modality_cross_share",
    "order_parameter",
    "paper_preset",
    "replace",
    "resolve_kind",
    "rhs",
    "simulate",
    "vector_field",
    "watts_strogatz",
]
