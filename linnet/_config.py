"""Precision policy.

linnet checks the paper's theory to 1e-8 and tighter, which needs float64. Importing linnet therefore
turns on JAX's 64-bit mode, unless the user has set ``JAX_ENABLE_X64`` themselves (for example
``JAX_ENABLE_X64=0`` on a TPU): an explicit choice is respected. Every function computes in the dtype of
the arrays it is given, so float32 inputs give float32 results either way.
"""

import os

import jax

if "JAX_ENABLE_X64" not in os.environ:
    jax.config.update("jax_enable_x64", True)
