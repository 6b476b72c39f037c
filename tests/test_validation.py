"""Bad input gets a clear error naming the argument."""

import warnings

import jax
import numpy as np
import pytest

import linnet


@pytest.fixture(scope="module")
def parts():
    rng = np.random.default_rng(0)
    n, d, k = 5, 12, 2
    X = rng.standard_normal((n, d))
    B0 = np.linalg.qr(rng.standard_normal((d, k)))[0].T
    Bs = np.linalg.qr(rng.standard_normal((d, k)))[0].T
    return X, B0, Bs, rng.standard_normal(k)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(B0=np.zeros((2, 11))), "`B0` must have shape"),
        (dict(B_star=np.zeros((3, 12))), "`B_star` must have shape"),
        (dict(v_star=np.zeros(3)), "`v_star` must have shape"),
        (dict(X=np.zeros(12)), "`X` must be 2-dimensional"),
    ],
)
def test_shape_mismatch(parts, change, match):
    X, B0, Bs, vs = parts
    kw = dict(X=X, B0=B0, B_star=Bs, v_star=vs) | change
    with pytest.raises(ValueError, match=match):
        linnet.Problem(kw["X"], kw["B0"], kw["B_star"], kw["v_star"])


def test_y_shape(parts):
    X, B0, Bs, vs = parts
    with pytest.raises(ValueError, match="`y` must have shape"):
        linnet.Problem(X, B0, Bs, vs, y=np.zeros(4))


@pytest.mark.parametrize("name", ["X", "B0", "B_star", "v_star", "y", "sigma_ood", "sigma_id"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_anywhere(parts, name, bad):
    X, B0, Bs, vs = parts
    kw = dict(
        X=X.copy(),
        B0=B0.copy(),
        B_star=Bs.copy(),
        v_star=vs.copy(),
        y=X @ Bs.T @ vs,
        sigma_ood=np.eye(12),
        sigma_id=np.eye(12),
    )
    kw[name] = kw[name].copy()
    kw[name].flat[0] = bad
    with pytest.raises(ValueError, match=f"`{name}` contains NaN or inf"):
        linnet.Problem(kw.pop("X"), kw.pop("B0"), kw.pop("B_star"), kw.pop("v_star"), **kw)


def test_non_psd_and_asymmetric_sigma(parts):
    X, B0, Bs, vs = parts
    S = np.eye(12)
    S[0, 0] = -1.0
    with pytest.raises(ValueError, match="`sigma_ood` must be positive semidefinite"):
        linnet.Problem(X, B0, Bs, vs, sigma_ood=S)
    A = np.eye(12)
    A[0, 1] = 0.5
    with pytest.raises(ValueError, match="`sigma_id` must be symmetric"):
        linnet.Problem(X, B0, Bs, vs, sigma_id=A)
    with pytest.raises(ValueError, match="`sigma_ood` must have shape"):
        linnet.Problem(X, B0, Bs, vs, sigma_ood=np.eye(11))


@pytest.mark.parametrize(("n", "d", "k"), [(5, 12, 5), (12, 10, 2), (8, 10, 3)])
def test_outside_regime_warns_but_runs(n, d, k):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n, d))
    B = np.linalg.qr(rng.standard_normal((d, k)))[0].T
    with pytest.warns(linnet.OverparameterisationWarning):
        p = linnet.Problem(X, B, B, np.ones(k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = linnet.linear_probe(p, np.zeros(k), [0.0, 1.0])
    assert np.all(np.isfinite(np.asarray(traj.v)))


@pytest.mark.parametrize(
    ("times", "match"),
    [
        ([1.0, 0.5], "strictly increasing"),
        ([0.0, 0.0], "strictly increasing"),
        ([-1.0, 1.0], "must be >= 0"),
        ([np.inf, 1.0], "strictly increasing"),
        ([], "non-empty 1-D"),
        ([[0.0, 1.0]], "non-empty 1-D"),
        ([0.0, np.nan], "NaN"),
    ],
)
@pytest.mark.parametrize("method", [linnet.linear_probe, linnet.fine_tune, linnet.lp_ft])
def test_bad_times(small_problem, method, times, match):
    with pytest.raises(ValueError, match=match):
        method(small_problem, np.zeros(small_problem.k), times)


@pytest.mark.parametrize("method", [linnet.linear_probe, linnet.fine_tune, linnet.lp_ft])
def test_bad_head(small_problem, method):
    with pytest.raises(ValueError, match="`v0` must have shape"):
        method(small_problem, np.zeros(small_problem.k + 1), [1.0])
    with pytest.raises(ValueError, match="`v0` contains NaN"):
        method(small_problem, np.full(small_problem.k, np.nan), [1.0])


def test_bad_tolerances(small_problem):
    with pytest.raises(ValueError, match="`rtol` must be a positive"):
        linnet.fine_tune(small_problem, np.zeros(2), [1.0], rtol=-1)
    with pytest.raises(ValueError, match="`max_steps` must be a positive integer"):
        linnet.fine_tune(small_problem, np.zeros(2), [1.0], max_steps=0)


def test_generator_arguments():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="`eps` must be in"):
        linnet.subspace_shift(key, d=10, k=1, n=3, eps=1.5)
    with pytest.raises(ValueError, match="`ood` must be one of"):
        linnet.subspace_shift(key, d=10, k=1, n=3, eps=0.1, ood="sideways")
    with pytest.raises(ValueError, match="`m`"):
        linnet.subspace_shift(key, d=10, k=1, n=3, eps=0.1, m=11)
    with pytest.raises(ValueError, match="`scale` must be"):
        linnet.random_head(key, 3, -1.0)


def test_error_function_shapes(small_problem):
    with pytest.raises(ValueError, match="`v` must have shape"):
        linnet.ood_error(small_problem, np.zeros(3), small_problem.B0)
    with pytest.raises(ValueError, match="`B` must have shape"):
        linnet.id_error(small_problem, np.zeros(2), np.zeros((2, 5)))
