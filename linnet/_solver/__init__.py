"""The solver layer: what integrates a flow, knowing nothing of any method.

- `integrate`: the one integration driver (diffrax's `diffeqsolve` with saves at the asked times, a steady-state
  stop for t = ∞, and unreached times marked NaN on failure).
- `rosenbrock`: `Rodas5P`, a Rosenbrock–Wanner method (one factorisation, eight linear solves per step).
- `fused`: `FusedKvaerno5`, Kvaerno5 with its stages as one scan and a Newton solve that the method supplies.
- `newton`: the Newton-solve interface (`AbstractNewton`), the dense LU that serves any flow, and the arrowhead
  elimination that sees an operator only through products.
- `choice`: the rule that picks an explicit solver on data that are not stiff, and solvers' labels.
- `diffrax_internals`: the one module that reads diffrax's private layout of an implicit stage's arguments.
"""
