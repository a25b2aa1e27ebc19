"""lorenz: the Lorenz experiment (docs/lorenz.md) and its low-dimensional test systems.

Test systems (``lorenz.systems``): Lorenz-63, Roessler and Henon with their standard chaotic
parameters, and a fixed-step RK4 trajectory (``lax.scan``) for any ``f(t, y, args)``.
The experiment: data and splits (``data``), ridge readout from streamed normal equations and
Shapley values (``readout``), the surrogate observer (``observer``), baselines (``baselines``),
closed-loop forecasting (``forecast``), and the whole run (``experiment``, ``figures``, ``report``).
"""

from lorenz.baselines import make_esn, ngrc_features, observer_baselines
from lorenz.bias import fixed_ridge_nmse, observer_shapley, shapley_difference
from lorenz.data import LYAPUNOV_TIME, LorenzSeries, Splits, attractor_points, lorenz_series
from lorenz.experiment import LorenzConfig, LorenzResult, run_experiment
from lorenz.forecast import ngrc_forecast, surrogate_forecast, valid_prediction_time
from lorenz.lanes import lane_statistics
from lorenz.observer import evaluate_observer, features, observer_statistics
from lorenz.readout import NormalEquations, RidgeFit, fit_ridge, normal_equations, shapley2
from lorenz.systems import (
    SYSTEMS,
    HenonParams,
    LorenzParams,
    RosslerParams,
    henon,
    iterate_map,
    lorenz63,
    rk4_trajectory,
    rossler,
)

__all__ = [
    "LYAPUNOV_TIME",
    "SYSTEMS",
    "HenonParams",
    "LorenzConfig",
    "LorenzResult",
    "LorenzParams",
    "LorenzSeries",
    "NormalEquations",
    "RidgeFit",
    "RosslerParams",
    "Splits",
    "evaluate_observer",
    "fixed_ridge_nmse",
    "observer_shapley",
    "shapley_difference",
    "attractor_points",
    "features",
    "fit_ridge",
    "henon",
    "iterate_map",
    "lane_statistics",
    "lorenz63",
    "lorenz_series",
    "make_esn",
    "ngrc_features",
    "ngrc_forecast",
    "normal_equations",
    "observer_baselines",
    "observer_statistics",
    "rk4_trajectory",
    "rossler",
    "run_experiment",
    "shapley2",
    "surrogate_forecast",
    "valid_prediction_time",
]
