"""The methods, each declared once in the registry (`linnet._registry`), one module per family.

- `ft_flow`: the generalised fine-tuning flow in reduced coordinates (field, steady-state rule, initial state) and
  `ft_jacobian`, its Newton solve in closed form; `paper`: LP, FT and LP-FT on it, and their public functions.
- `variants`: two learning rates, L2-SP and features-only; `general_flows`: LoRA and deep feature extractors;
  `gd`: discrete gradient descent; `logistic`: the logistic-loss variants of LP, FT and LP-FT.

A module here may use the solver layer (`linnet._solver`) and the run layer's `simulate` for its public function;
the run layer never imports a method: it reads declarations from the registry.
"""
