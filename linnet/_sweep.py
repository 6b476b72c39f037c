"""Batched (vmapped) simulation of many instances of one shape: the machinery behind stress searches and sweeps."""

from __future__ import annotations

import dataclasses
import functools
from functools import partial

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np

from . import _flow
from ._methods import ConvergenceError, _lp_heads, _predictor
from ._problem import Problem, subspace_shift
from ._validate import check_times


def batched_subspace_shifts(
    keys, eps, *, d: int, k: int, n: int, m: int | None = None, v_star_scale=None, inputs: str = "subspace"
):
    """A batch of `subspace_shift` problems of one shape, one per key and ε: a `Problem` pytree whose every array
    has a leading batch axis N (the input to `sweep`).

    **Arguments:** `keys` (N,) `jax.random` keys, `eps` (N,) feature errors (or one ε for all), `d`, `k`, `n`, `m`,
    `inputs` as `subspace_shift`, `v_star_scale` (N,) or None (1). Σ_ood is the default I.

    **Returns:** a batched `Problem`.
    """
    keys = jnp.asarray(keys)
    typed = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    if (typed and keys.ndim != 1) or (not typed and (keys.ndim != 2 or keys.shape[1] != 2)):
        raise ValueError(
            f"`keys` must be N jax.random keys (jax.random.split(key, N)), got shape {keys.shape}, dtype {keys.dtype}"
        )
    eps = jnp.broadcast_to(jnp.asarray(eps, dtype=jnp.result_type(float)), keys.shape[:1])
    scale = jnp.ones_like(eps) if v_star_scale is None else v_star_scale
    return _batched_generator(d, k, n, m, inputs)(keys, eps, scale)


@functools.lru_cache(maxsize=32)
def _batched_generator(d, k, n, m, inputs):
    def one(args):
        key, e, s = args
        return subspace_shift(key, d=d, k=k, n=n, m=m, eps=e, v_star_scale=s, inputs=inputs)

    # lax.map (one instance at a time inside one compiled loop), not vmap: on this project's 2-core CPU machines a
    # vmapped generator hung inside XLA with no CPU use (reproducibly: 16 problems at d = 500, 64 at d = 200;
    # never with one instance per iteration). Generation is a small part of a sweep's cost either way.
    return jax.jit(lambda keys, eps, scale: jax.lax.map(one, (keys, eps, scale)))


@partial(jax.jit, static_argnames=("to_inf", "max_steps", "chunk"))
def _ft_batch(problems: Problem, v0s, ts, to_inf, rtol, atol, max_steps, chunk):
    def one(p, v0):
        G0 = p.B0 @ p._V
        v, G, result, steps, _ = _flow.solve_reduced(
            p._s, p._Uty, v0, G0, ts, to_inf=to_inf, rtol=rtol, atol=atol, max_steps=max_steps
        )
        w = _predictor(p.B0, p._V, v, G - G0)
        return v, w, result, steps

    # lax.map runs the instances inside one compiled loop, vmapping `chunk` at a time. On CPU chunk = 1 is fastest:
    # a vmapped adaptive solve runs every member for as many steps as the slowest one, and its implicit stages turn
    # per-instance branches into selects (measured: 16 instances vmapped took 11 s, one after another 6 s).
    return jax.lax.map(lambda a: one(*a), (problems, v0s), batch_size=None if chunk == 1 else chunk)


def batched_predictors(
    problems: Problem,
    v0s,
    times,
    *,
    method: str = "ft",
    rtol=1e-8,
    atol=1e-10,
    max_steps=100_000,
    chunk: int = 1,
    devices=None,
):
    """Predictors w(t) = B(t)ᵀ v(t) for a batch of problems of one shape.

    **Arguments:** `problems` a batched `Problem`, `v0s` (N, k), `times` as in `fine_tune`, `method` in
    {"ft", "lp", "lpft"}, `chunk` how many instances are vmapped together inside the compiled loop (1 is fastest on
    CPU; larger chunks suit accelerators), `devices` the devices to shard the batch axis over (default: all of
    `jax.devices()`; one device runs unsharded). On several hosts call `jax.distributed.initialize()` first.

    **Returns:** `(v (N, T, k), w (N, T, d))`. Raises `ConvergenceError` naming how many instances failed.
    """
    finite, to_inf = check_times(times)
    dtype = problems.X.dtype
    t_all = jnp.asarray(np.asarray(times, dtype=np.float64), dtype)
    if method == "lp":
        v = jax.vmap(_lp_heads, in_axes=(0, 0, None))(problems, v0s, t_all)
        return v, jnp.einsum("ntk,nkd->ntd", v, problems.B0)
    if method == "lpft":
        v0s = jax.vmap(_lp_heads, in_axes=(0, 0, None))(problems, v0s, jnp.asarray([jnp.inf], dtype))[:, 0]
    elif method != "ft":
        raise ValueError(f"`method` must be 'ft', 'lp' or 'lpft', got {method!r}")
    devices = jax.devices() if devices is None else list(devices)
    ts = jnp.asarray(finite, dtype)
    fn = partial(_ft_batch, ts=ts, to_inf=to_inf, rtol=rtol, atol=atol, max_steps=int(max_steps), chunk=int(chunk))
    v, w, result, _ = _run_sharded(fn, problems, v0s, devices)
    ok = (result == dfx.RESULTS.successful) | (result == dfx.RESULTS.event_occurred)
    if not bool(jnp.all(ok)):
        bad = np.flatnonzero(~np.asarray(ok))
        raise ConvergenceError(
            f"{bad.size} of {ok.shape[0]} instances did not converge (first: index {bad[0]}); "
            f"increase `max_steps` (now {max_steps})"
        )
    return v, w


# ------------------------------------------------------------------------------------------------------
# Public sweep: instances × methods × heads, metrics only
# ------------------------------------------------------------------------------------------------------

_NAMED_FLOWS = {
    # name: (η_v, η_B, λ_v, λ_B, start from the LP head)
    "ft": ((1.0, 1.0, 0.0, 0.0), False),
    "lpft": ((1.0, 1.0, 0.0, 0.0), True),
}


_DICT_METHODS = {
    # name: allowed keys, with defaults
    "two_lr": {"eta_v": 1.0, "eta_B": 1.0, "lp_head": False},
    "l2_sp": {"lam_B": 0.0, "lam_v": None, "lp_head": False},
    "gd": {"lr_fraction": 0.5, "lp_head": False},
    "lora": {"rank": 2, "init_scale": 1.0, "seed": 0, "lp_head": False},
    "deep": {"depth": 2, "lp_head": False},
}


def _method_spec(m) -> tuple[str, str, tuple[float, ...] | None, bool, tuple]:
    """(label, kind, numeric params, lp_head, static params) of a method given as a name or a dict."""
    if isinstance(m, str):
        if m == "lp":
            return "lp", "lp", None, False, ()
        if m in ("features_only", "lp_features_only"):
            return m, "features_only", None, m == "lp_features_only", ()
        if m in _NAMED_FLOWS:
            params, lp_head = _NAMED_FLOWS[m]
            return m, "flow", params, lp_head, ()
        raise ValueError(
            f"unknown method {m!r} in `methods`; expected 'lp', 'ft', 'lpft', 'features_only', 'lp_features_only' "
            f"or a dict with 'name' in {sorted(_DICT_METHODS)}, e.g. {{'name': 'two_lr', 'eta_B': 0.1}}"
        )
    if not isinstance(m, dict):
        raise TypeError(f"each entry of `methods` must be a str or a dict, got {type(m).__name__}")
    m = dict(m)
    name = m.pop("name", None)
    if name not in _DICT_METHODS:
        raise ValueError(f"a dict in `methods` needs 'name' in {sorted(_DICT_METHODS)}, got {name!r}")
    bad = set(m) - set(_DICT_METHODS[name])
    if bad:
        raise ValueError(f"method {name!r} takes {sorted(_DICT_METHODS[name])}, got unknown {sorted(bad)}")
    o = {**_DICT_METHODS[name], **m}
    lp_head = bool(o.pop("lp_head"))
    label = name + "(" + ", ".join(f"{a}={b:g}" for a, b in m.items() if a != "lp_head")
    label += (", lp_head" if lp_head else "") + ")"
    if name in ("two_lr", "l2_sp"):
        eta_v, eta_B = float(o.get("eta_v", 1.0)), float(o.get("eta_B", 1.0))
        lam_B = float(o.get("lam_B", 0.0))
        lam_v = lam_B if o.get("lam_v") is None else float(o["lam_v"])  # as `l2_sp`: λ_v defaults to λ_B
        if not (eta_v > 0 and eta_B > 0 and lam_v >= 0 and lam_B >= 0):
            raise ValueError(f"method {name!r} needs eta_v, eta_B > 0 and lam_v, lam_B >= 0, got {m}")
        return label, "flow", (eta_v, eta_B, lam_v, lam_B), lp_head, ()
    if name == "gd":
        if not 0 < float(o["lr_fraction"]):
            raise ValueError(f"method 'gd' needs lr_fraction > 0 (of the stable step 2/λ_max), got {o['lr_fraction']}")
        return label, "gd", (float(o["lr_fraction"]), 0.0, 0.0, 0.0), lp_head, ()
    if name == "lora":
        if int(o["rank"]) != o["rank"] or o["rank"] < 1 or not float(o["init_scale"]) >= 0:
            raise ValueError(f"method 'lora' needs a positive integer rank and init_scale >= 0, got {m}")
        return label, "lora", (float(o["init_scale"]), 0.0, 0.0, 0.0), lp_head, (int(o["rank"]), int(o["seed"]))
    if int(o["depth"]) != o["depth"] or o["depth"] < 1:
        raise ValueError(f"method 'deep' needs a positive integer depth, got {o['depth']}")
    return label, "deep", (1.0, 1.0, 0.0, 0.0), lp_head, (int(o["depth"]),)


@partial(jax.jit, static_argnames=("to_inf", "max_steps", "kind", "lp_head", "chunk", "explicit", "static"))
def _metrics_batch(
    problems, inputs, ts, params, *, to_inf, kind, lp_head, rtol, atol, max_steps, chunk, explicit=False, static=()
):
    """(train_loss, id_error, ood_error) (N, T), steps (N,), ok (N,) for one method on a batch (one compile).
    `inputs` = (heads (N, k), global instance indices (N,)); the indices seed per-instance randomness (LoRA)."""
    from ._errors import id_error_of_predictor, ood_error_of_predictor, train_loss_of_predictor
    from ._methods import lp_limit_head
    from ._variants import (
        _deep_init,
        _deep_loss,
        _deep_predictor,
        _features_only_path,
        _gd_path,
        _gf_solve,
        _hess_lmax,
        _lora_init,
        _lora_loss,
        _lora_predictor,
    )

    t_all = jnp.concatenate([ts, jnp.full((1,), jnp.inf, ts.dtype)]) if to_inf else ts

    def success(res):
        return (res == dfx.RESULTS.successful) | (res == dfx.RESULTS.event_occurred)

    def one(args):
        p, (v0, idx) = args
        if lp_head:
            v0 = lp_limit_head(p, v0)
        G0 = p.B0 @ p._V
        if kind == "lp":
            v = _lp_heads(p, v0, t_all)
            w = _predictor(p.B0, p._V, v, jnp.zeros((t_all.shape[0], *G0.shape), v0.dtype))
            ok, steps = jnp.asarray(True), jnp.asarray(0)
        elif kind == "features_only":
            v, dG = _features_only_path(p, v0, t_all)
            w = _predictor(p.B0, p._V, v, dG)
            ok, steps = jnp.asarray(True), jnp.asarray(0)
        elif kind == "gd":
            lr = params[0] * 2.0 / _hess_lmax(p._s, p._Uty, (v0, G0))
            v, G, steps, bad, conv = _gd_path(p._s, p._Uty, v0, G0, t_all, lr, rtol, atol, 10 * max_steps)
            w = _predictor(p.B0, p._V, v, G - G0)
            ok = ~bad & conv
        elif kind == "lora":
            rank, seed = static
            key = jax.random.fold_in(jax.random.PRNGKey(seed), idx)
            W0 = params[0] / jnp.sqrt(p.d) * jax.random.normal(key, (rank, p.d), v0.dtype)
            path, res, steps = _gf_solve(_lora_loss, _lora_init(p, v0, W0), ts, to_inf, rtol, atol, max_steps)
            w, ok = _lora_predictor(p, W0, path), success(res)
        elif kind == "deep":
            path, res, steps = _gf_solve(_deep_loss, _deep_init(p, v0, static[0]), ts, to_inf, rtol, atol, max_steps)
            w, ok = _deep_predictor(p, path), success(res)
        else:
            v, G, res, steps, _ = _flow.solve_reduced(
                p._s, p._Uty, v0, G0, ts, to_inf=to_inf, rtol=rtol, atol=atol, max_steps=max_steps, params=params,
                solver=_flow.explicit_solver() if explicit else None,
            )  # fmt: skip
            w, ok = _predictor(p.B0, p._V, v, G - G0), success(res)
        metrics = (train_loss_of_predictor(p, w), id_error_of_predictor(p, w), ood_error_of_predictor(p, w))
        return metrics, steps, ok

    return jax.lax.map(one, (problems, inputs), batch_size=None if chunk == 1 else chunk)


@partial(
    jax.tree_util.register_dataclass,
    data_fields=["times", "train_loss", "id_error", "ood_error", "num_steps"],
    meta_fields=["methods", "heads"],
)
@dataclasses.dataclass(frozen=True)
class SweepResult:
    """Metrics of a sweep (an immutable pytree); no parameters are stored, so memory is O(M H N T).

    **Fields:** `times` (T,); `train_loss`, `id_error`, `ood_error` (M, H, N, T) indexed by method, head and
    instance; `num_steps` (M, H, N) ODE steps (0 for closed forms); `methods`, `heads` the labels of the axes.
    """

    times: jax.Array
    train_loss: jax.Array
    id_error: jax.Array
    ood_error: jax.Array
    num_steps: jax.Array
    methods: tuple[str, ...]
    heads: tuple[str, ...]

    def get(self, method: str, head: str | None = None) -> dict[str, np.ndarray]:
        """The (N, T) metrics of one method (and head; default the first) as NumPy arrays."""
        if method not in self.methods:
            raise KeyError(f"method {method!r} not in this sweep; it has {list(self.methods)}")
        head = self.heads[0] if head is None else head
        if head not in self.heads:
            raise KeyError(f"head {head!r} not in this sweep; it has {list(self.heads)}")
        i, j = self.methods.index(method), self.heads.index(head)
        return {
            name: np.asarray(getattr(self, name)[i, j]) for name in ("train_loss", "id_error", "ood_error", "num_steps")
        }


def sweep(
    problems: Problem,
    heads,
    times,
    *,
    methods=("lp", "ft", "lpft"),
    batch_size: int = 256,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    chunk: int = 1,
    devices=None,
    progress: bool = True,
) -> SweepResult:
    """Run many instances × methods × heads, each (method, head) one compiled computation per batch, and keep
    only the metrics L̂, L_id, L_ood at `times`.

    **Arguments:**

    - `problems`: a batched `Problem` (every array with a leading axis N), e.g. from `subspace_shifts`.
    - `heads`: initial heads, an (N, k) array (one per instance) or a (k,) array (shared), or a dict
      {label: such an array} to sweep several head initialisations.
    - `times`: (T,) increasing times ≥ 0 in the paper's units; a last `inf` is the limit.
    - `methods`: names in {"lp", "ft", "lpft", "features_only", "lp_features_only"} or dicts with a "name" and
      parameters: {"name": "two_lr", "eta_v", "eta_B"}, {"name": "l2_sp", "lam_B", "lam_v"},
      {"name": "gd", "lr_fraction"} (step = lr_fraction · 2/λ_max at the start, per instance),
      {"name": "lora", "rank", "init_scale", "seed"} (W0 drawn from fold_in(PRNGKey(seed), instance index)),
      {"name": "deep", "depth"}; each also takes "lp_head": True. See `two_learning_rates`, `l2_sp`,
      `gradient_descent`, `lora`, `deep_fine_tune`, `features_only`.
    - `batch_size`: instances per compiled call (progress is reported per batch); `chunk`: instances vmapped
      together inside a call (1 is fastest on CPU); `devices`: devices to shard each batch over (default all;
      on several hosts call `jax.distributed.initialize()` first).
    - `rtol`, `atol`, `max_steps`: as `fine_tune`. `progress`: show a progress bar over batches.

    **Returns:** a `SweepResult`. Raises `ConvergenceError` if any solve did not converge.
    """
    from tqdm.auto import tqdm

    finite, to_inf = check_times(times)
    N = jax.tree_util.tree_leaves(problems)[0].shape[0] if problems.X.ndim == 3 else None
    if N is None:
        raise ValueError(
            f"`problems` must be a batched Problem (X of shape (N, n, d)), got X of shape {problems.X.shape}"
        )
    k = problems.B0.shape[1]
    dtype = problems.X.dtype
    if not isinstance(heads, dict):
        heads = {"v0": heads}
    head_arrays = {}
    for label, h in heads.items():
        h = jnp.asarray(h, dtype)
        if h.shape == (k,):
            h = jnp.broadcast_to(h, (N, k))
        if h.shape != (N, k):
            raise ValueError(f"head {label!r} in `heads` must have shape ({k},) or ({N}, {k}), got {h.shape}")
        head_arrays[label] = h
    specs = [_method_spec(m) for m in methods]
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size}")
    devices = jax.devices() if devices is None else list(devices)
    ts = jnp.asarray(finite, dtype)
    T = len(finite) + to_inf
    out = np.zeros((3, len(specs), len(head_arrays), N, T))
    steps = np.zeros((len(specs), len(head_arrays), N), dtype=np.int64)
    starts = range(0, N, int(batch_size))
    bar = tqdm(total=len(starts) * len(specs) * len(head_arrays), desc="sweep", unit="batch", disable=not progress)
    for i, (label, kind, params, lp_head, static) in enumerate(specs):
        pa = jnp.asarray(params if params is not None else (1.0, 1.0, 0.0, 0.0), dtype)
        for j, h in enumerate(head_arrays.values()):
            for b in starts:
                sl = slice(b, min(b + int(batch_size), N))
                batch = jax.tree_util.tree_map(lambda a, sl=sl: a[sl], problems)
                # as `fine_tune`: plain FT on non-stiff data uses the explicit method, the implicit one if that fails
                explicit = kind == "flow" and params == _NAMED_FLOWS["ft"][0] and _flow.explicit_is_enough(batch._s)
                for use_explicit in (True, False) if explicit else (False,):
                    fn = partial(
                        _metrics_batch, ts=ts, params=pa, to_inf=to_inf, kind=kind, lp_head=lp_head, rtol=rtol,
                        atol=atol, chunk=int(chunk), explicit=use_explicit, static=static,
                        max_steps=min(int(max_steps), _flow.EXPLICIT_STEPS) if use_explicit else int(max_steps),
                    )  # fmt: skip
                    idx = jnp.arange(sl.start, sl.stop)
                    (metrics, st, ok) = _run_sharded(fn, batch, (h[sl], idx), devices)
                    if bool(np.all(ok)):
                        break
                if not bool(np.all(ok)):
                    bad = np.flatnonzero(~np.asarray(ok))
                    raise ConvergenceError(
                        f"method {label!r}, head {list(head_arrays)[j]!r}: {bad.size} instances did not converge "
                        f"(first: index {b + bad[0]}); increase `max_steps` (now {max_steps})"
                    )
                out[:, i, j, sl] = np.stack([np.asarray(x) for x in metrics])
                steps[i, j, sl] = np.asarray(st)
                bar.update()
    bar.close()
    return SweepResult(
        times=jnp.asarray(np.asarray(times, dtype=np.float64), dtype),
        train_loss=jnp.asarray(out[0]),
        id_error=jnp.asarray(out[1]),
        ood_error=jnp.asarray(out[2]),
        num_steps=jnp.asarray(steps),
        methods=tuple(s[0] for s in specs),
        heads=tuple(head_arrays),
    )


def _run_sharded(fn, problems, v0s, devices):
    """`fn(problems, v0s)` with the batch axis sharded over `devices` (a 1-D `Mesh` and `shard_map`; each device
    runs its own compiled loop over its shard). The batch is padded to a multiple of the device count by repeating
    the last instance, and the padding is dropped afterwards. One device runs `fn` directly."""
    if len(devices) == 1:
        return fn(problems, v0s)
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    n_dev = len(devices)
    N = jax.tree_util.tree_leaves(v0s)[0].shape[0]
    pad = (-N) % n_dev
    if pad:
        problems, v0s = jax.tree_util.tree_map(
            lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]), (problems, v0s)
        )
    mesh = Mesh(np.asarray(devices), ("batch",))
    spec = P("batch")
    out = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(spec, spec), out_specs=spec, check_vma=False))(problems, v0s)
    return jax.tree_util.tree_map(lambda a: a[:N], out)
