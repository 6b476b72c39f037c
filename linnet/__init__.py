"""linnet: a theory simulator for two-layer linear networks f(x) = vᵀ B x under distribution shift.

Reproduces Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution"
(ICLR 2022). Data flow: `Problem` → method (`linear_probe`, `fine_tune`, `lp_ft`, and beyond the paper
`two_learning_rates`, `l2_sp`, `features_only`, `gradient_descent`, `lora`, `deep_fine_tune`, `wise_ft`) →
`Trajectory` → errors and `linnet.theory`; many instances at once with `subspace_shifts` → `sweep`; your own
conjectures searched, replayed and pinned with `linnet.testing`.
"""

from . import figures, stress, testing, theory
from ._classification import is_separable, logistic_loss, max_margin, normalised_margin, zero_one_error
from ._config import enable_x64, fast_compile, light_compile, sequential_runtime, use_compilation_cache
from ._errors import id_error, ood_error, predictor, train_loss
from ._generators import (
    figure2_ood_point,
    figure2_toy,
    random_head,
    random_orthogonal,
    subspace_shift,
    subspace_shifts,
)
from ._geometry import (
    complement_projection,
    feature_distance,
    principal_cosines,
    projection,
)
from ._interpolate import EarlyStop, Interpolation, early_stopping, wise_ft, with_label_noise
from ._methods import logistic as _logistic  # noqa: F401  (registers the logistic-loss variants)
from ._methods.gd import gd_stability_step, gradient_descent
from ._methods.general_flows import deep_fine_tune, lora
from ._methods.paper import fine_tune, linear_probe, lp_ft
from ._methods.variants import features_only, l2_sp, two_learning_rates
from ._problem import Problem, Reduced
from ._registry import (
    ClosedFormMethod,
    FlowMethod,
    IterationMethod,
    Method,
    Param,
    get_method,
    methods,
    register,
    unregister,
)
from ._run.simulate import simulate
from ._run.sweep import SweepResult, sweep
from ._trajectory import RESULTS, ConvergenceError, DivergenceError, Trajectory, is_okay
from ._validate import OverparameterisationWarning
from ._version import __version__ as __version__

__all__ = [
    "RESULTS",
    "ClosedFormMethod",
    "ConvergenceError",
    "DivergenceError",
    "EarlyStop",
    "FlowMethod",
    "Interpolation",
    "IterationMethod",
    "Method",
    "OverparameterisationWarning",
    "Param",
    "Problem",
    "Reduced",
    "SweepResult",
    "Trajectory",
    "complement_projection",
    "deep_fine_tune",
    "early_stopping",
    "enable_x64",
    "fast_compile",
    "feature_distance",
    "features_only",
    "figure2_ood_point",
    "figure2_toy",
    "figures",
    "fine_tune",
    "gd_stability_step",
    "get_method",
    "gradient_descent",
    "id_error",
    "is_okay",
    "is_separable",
    "l2_sp",
    "light_compile",
    "linear_probe",
    "logistic_loss",
    "lora",
    "lp_ft",
    "max_margin",
    "methods",
    "normalised_margin",
    "ood_error",
    "predictor",
    "principal_cosines",
    "projection",
    "random_head",
    "random_orthogonal",
    "register",
    "sequential_runtime",
    "simulate",
    "stress",
    "subspace_shift",
    "subspace_shifts",
    "sweep",
    "testing",
    "theory",
    "train_loss",
    "two_learning_rates",
    "unregister",
    "use_compilation_cache",
    "wise_ft",
    "with_label_noise",
    "zero_one_error",
]
