"""The run layer: one plan that interprets a method's declaration for every route.

- `simulate`: one method, one problem (eager, under `jit`, `vmap` and `grad`).
- `plan`: the solver plan (explicit attempt, implicit fallback) and the one sharding helper, shared by every route.
- `sweep`: a grid of instances × methods; `stacked`: a batch of FT-flow instances as one ODE;
  `predictors`: the predictors of many instances at once (the figures' and the search's route).
"""
