"""Option names shared by every method, and the older names they replace.

One name per idea: ``temperature`` for a softening temperature (``kd_temperature`` for a second
one), ``weight`` for the weight of a method's main term and ``<term>_weight`` for the others.
Older names (``T``, ``tau``, ``alpha``, ``w_*``...) still work, each with a one-line
``DeprecationWarning`` naming the new one, through a method's ``renamed_options``.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

# Shown once per message even outside ``__main__`` (where Python hides DeprecationWarning), so a
# user running a config with an old name reads which name to write instead.
warnings.filterwarnings("default", message=r"method '.*': option '.*' is deprecated", category=DeprecationWarning)


def current_options(method: str, options: Mapping[str, Any], renamed: Mapping[str, str]) -> dict[str, Any]:
    """``options`` with each old name in ``renamed`` (old → new) replaced by its new name.

    Raises:
        ValueError: when an option is given under both its old and its new name.
    """
    current = dict(options)
    for old, new in renamed.items():
        if old not in current:
            continue
        if new in current:
            raise ValueError(f"method '{method}': options '{old}' and '{new}' are one option; keep '{new}'")
        warnings.warn(f"method '{method}': option '{old}' is deprecated; write '{new}' instead",
                      DeprecationWarning, stacklevel=3)
        current[new] = current.pop(old)
    return current


def check_temperature(value: float, method: str, option: str = "temperature") -> float:
    """``value`` when it is a temperature (> 0); otherwise a ``ValueError`` naming method and option."""
    if not value > 0:  # `not >` also refuses NaN
        raise ValueError(f"method '{method}': option '{option}' must be > 0, got {value!r}")
    return value
