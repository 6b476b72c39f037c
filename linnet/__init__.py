"""linnet: a theory simulator for two-layer linear networks f(x) = vᵀ B x under distribution shift.

Reproduces Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution"
(ICLR 2022). Data flow: `Problem` → method (`linear_probe`, `fine_tune`, `lp_ft`, and beyond the paper
`two_learning_rates`, `l2_sp`, `features_only`, `gradient_descent`, `lora`, `deep_fine_tune`, `wise_ft`) →
`Trajectory` → errors and `linnet.theory`; many instances at once with `subspace_shifts` → `sweep`.
"""

from . import (
    _config,  # noqa: F401  (turns on float64 unless the user chose otherwise)
    figures,
    stress,
    theory,
)
from ._config import use_compilation_cache
from ._errors import id_error, ood_error, predictor, train_loss
from ._geometry import (
    complement_projection,
    feature_distance,
    principal_cosines,
    projection,
)
from ._methods import ConvergenceError, Trajectory, fine_tune, linear_probe, lp_ft
from ._problem import Problem, figure2_ood_point, figure2_toy, random_head, random_orthogonal, subspace_shift
from ._sweep import SweepResult, sweep
from ._sweep import batched_subspace_shifts as subspace_shifts
from ._validate import OverparameterisationWarning
from ._variants import (
    DivergenceError,
    EarlyStop,
    Interpolation,
    deep_fine_tune,
    early_stopping,
    features_only,
    gd_stability_step,
    gradient_descent,
    l2_sp,
    lora,
    two_learning_rates,
    wise_ft,
    with_label_noise,
)

__version__ = "0.1.0"

__all__ = [
    "ConvergenceError",
    "DivergenceError",
    "EarlyStop",
    "Interpolation",
    "OverparameterisationWarning",
    "Problem",
    "SweepResult",
    "Trajectory",
    "complement_projection",
    "deep_fine_tune",
    "early_stopping",
    "feature_distance",
    "features_only",
    "figure2_ood_point",
    "figure2_toy",
    "figures",
    "fine_tune",
    "gd_stability_step",
    "gradient_descent",
    "id_error",
    "l2_sp",
    "linear_probe",
    "lora",
    "lp_ft",
    "ood_error",
    "predictor",
    "principal_cosines",
    "projection",
    "random_head",
    "random_orthogonal",
    "stress",
    "subspace_shift",
    "subspace_shifts",
    "sweep",
    "theory",
    "train_loss",
    "two_learning_rates",
    "use_compilation_cache",
    "wise_ft",
    "with_label_noise",
]
