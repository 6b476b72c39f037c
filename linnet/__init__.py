"""linnet: a theory simulator for two-layer linear networks f(x) = vᵀ B x under distribution shift.

Reproduces Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution"
(ICLR 2022). Data flow: `Problem` → method (`linear_probe`, `fine_tune`, `lp_ft`) → `Trajectory` →
errors and `linnet.theory`.
"""

from . import (
    _config,  # noqa: F401  (turns on float64 unless the user chose otherwise)
    figures,
    stress,
    theory,
)
from ._errors import id_error, ood_error, predictor, train_loss
from ._geometry import (
    complement_projection,
    feature_distance,
    principal_cosines,
    projection,
)
from ._methods import ConvergenceError, Trajectory, fine_tune, linear_probe, lp_ft
from ._problem import Problem, figure2_ood_point, figure2_toy, random_head, random_orthogonal, subspace_shift
from ._validate import OverparameterisationWarning

__version__ = "0.1.0"

__all__ = [
    "ConvergenceError",
    "OverparameterisationWarning",
    "Problem",
    "Trajectory",
    "complement_projection",
    "feature_distance",
    "figure2_ood_point",
    "figure2_toy",
    "figures",
    "fine_tune",
    "id_error",
    "linear_probe",
    "lp_ft",
    "ood_error",
    "predictor",
    "principal_cosines",
    "projection",
    "random_head",
    "random_orthogonal",
    "stress",
    "subspace_shift",
    "theory",
    "train_loss",
]
