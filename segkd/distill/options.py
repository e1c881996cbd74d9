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


def current_options(method: str, options: Mapping[str, Any], renamed: Mapping[str, str],
                    warn: bool = True) -> dict[str, Any]:
    """``options`` with each old name in ``renamed`` (old → new) replaced by its new name, each with a
    ``DeprecationWarning`` unless ``warn`` is False (reading a config stored before the rename).

    Raises:
        ValueError: when an option is given under both its old and its new name.
    """
    current = dict(options)
    for old, new in renamed.items():
        if old not in current:
            continue
        if new in current:
            raise ValueError(f"method '{method}': options '{old}' and '{new}' are one option; keep '{new}'")
        if warn:
            warnings.warn(f"method '{method}': option '{old}' is deprecated; write '{new}' instead",
                          DeprecationWarning, stacklevel=3)
        current[new] = current.pop(old)
    return current


_ABSENT = object()


def method_values(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A method entry by what it builds: each older option name under its current one, without the
    options that restate the value the method takes when they are left out (``{name: byot, alpha: 0.1}``
    is ``{name: byot}``: 0.1 is BYOT's default kd_share). Two entries that build the same method compare
    equal however they are spelled; no ``DeprecationWarning`` is shown.

    Raises:
        KeyError: an unknown method.
        ValueError: an unknown option, an option under both names, or a value the method refuses.
    """
    from segkd.distill.base import METHODS, build_method  # here, not above: base imports this module

    name = spec["name"]
    options = current_options(name, {k: v for k, v in spec.items() if k != "name"},
                              METHODS.get(name).renamed_options, warn=False)
    kept = {}
    for option, value in options.items():
        # Built without it, one at a time: a default may depend on another option (Tf-KD's on its mode).
        without = build_method({"name": name, **{k: v for k, v in options.items() if k != option}})
        if getattr(without, option, _ABSENT) != value:  # stored under another attribute: kept as written
            kept[option] = value
    return {"name": name, **kept}


def check_temperature(value: float, method: str, option: str = "temperature") -> float:
    """``value`` when it is a temperature (> 0); otherwise a ``ValueError`` naming method and option."""
    if not value > 0:  # `not >` also refuses NaN
        raise ValueError(f"method '{method}': option '{option}' must be > 0, got {value!r}")
    return value
