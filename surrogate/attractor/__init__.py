"""Attractor analysis: correlation dimension, recurrence quantification, phase clusters, locking.

* ``correlation_dimension``: Grassberger-Procaccia. C(r) is the fraction of pairs of points (pairs
  closer in time than a Theiler window excluded) at distance < r; D2 is the slope of log C against
  log r over a scaling region chosen automatically (the longest run of radii whose local slopes stay
  within a relative tolerance of the fitted slope) and reported with the result.
* ``recurrence_quantification``: recurrence rate RR, determinism DET (share of recurrence points on
  diagonal lines of length >= l_min) and laminarity LAM (share on vertical lines >= v_min).
* ``phase_clusters`` / ``locking_clusters``: groups of oscillators at a common phase (one snapshot)
  or phase-locked over a trajectory, with the count per modality; ``cross_population_locking`` and
  ``synchrony``: locking between modalities' mean fields and the Kuramoto order parameter per
  modality (``surrogate.metrics.order_parameter``).

Conventions: a Theiler window ``theiler = w`` excludes the pairs with |i - j| <= w (w = 0: only the
self-pairs). All functions are jit-able (array sizes fixed by static arguments) and act on one
trajectory or state; vmap at the call site. Modules: ``correlation``, ``recurrence``,
``clusters`` (and ``trajectory``, their shared checks).
"""

from surrogate.attractor.clusters import (
    PhaseClusters,
    Synchrony,
    cross_population_locking,
    locking_clusters,
    locking_matrix,
    phase_clusters,
    synchrony,
)
from surrogate.attractor.correlation import (
    CorrelationDimension,
    correlation_dimension,
    correlation_sum,
)
from surrogate.attractor.recurrence import (
    RecurrenceQuantification,
    recurrence_matrix,
    recurrence_quantification,
)

__all__ = [
    "CorrelationDimension",
    "PhaseClusters",
    "RecurrenceQuantification",
    "Synchrony",
    "correlation_dimension",
    "correlation_sum",
    "cross_population_locking",
    "locking_clusters",
    "locking_matrix",
    "phase_clusters",
    "recurrence_matrix",
    "recurrence_quantification",
    "synchrony",
]
