"""Process-local switches that change where a computation is routed, set only by context managers.

`REFERENCE` holds the reference simulator while `linnet.testing.reference()` is active: `simulate` then hands
every call to it (a full-state scipy integration, independent of linnet's solver) instead of its own solve.

`LIGHT` is True while `linnet.light_compile()` is active: linnet's programs compiled then use the set-up
compiler options (`linnet._config.SETUP_OPTIONS`)."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

REFERENCE: ContextVar[Callable | None] = ContextVar("linnet_reference", default=None)
LIGHT: ContextVar[bool] = ContextVar("linnet_light_compile", default=False)
