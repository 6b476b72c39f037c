"""A method declared outside linnet, as a user would: linear probing integrated as an ODE (head only, B frozen),
v̇ = −speed · ∇_v L̂(v, B0) = −2 speed · G0 (s ⊙ (s ⊙ G0ᵀv − Uᵀy)). Its exact solution is `linnet.linear_probe` at
time speed · t, which the tests use as the independent reference."""

import diffrax as dfx
import jax.numpy as jnp

import linnet

NAME = "lp_ode"


def _init(problem, v0, p, key):
    red = problem.reduced
    return v0, (red.s, red.Uty, red.G0, p["speed"]), None


def _field(t, v, args):
    s, a, G0, speed = args
    return -2.0 * speed * (G0 @ (s * (s * (G0.T @ v) - a)))


def _steady(rtol, atol):
    def cond(t, v, args, **kwargs):
        s, _, G0, speed = args
        lam_min = jnp.linalg.eigvalsh((G0 * s**2) @ G0.T)[0]  # the slowest rate is 2 speed λ_min(FᵀF)
        f = _field(t, v, args)
        return jnp.linalg.norm(f) <= 2.0 * speed * lam_min * (atol + rtol * jnp.linalg.norm(v))

    return cond


def _decode(problem, ys, args, aux, p):
    red = problem.reduced
    return ys, jnp.zeros((ys.shape[0], *red.G0.shape), ys.dtype), red.V


linnet.register(
    linnet.FlowMethod(
        NAME,
        "linear probing integrated as an ODE at a given speed",
        params=(linnet.Param("speed", 1.0, positive=True, doc="time scale of the head's flow"),),
        init=_init,
        field=_field,
        steady=_steady,
        decode=_decode,
        solver=lambda k: dfx.Kvaerno5(),
    )
)
