"""Option names shared by every method, and the older names they replace.

One name per idea: ``temperature`` for a softening temperature (``kd_temperature`` for a second
one), ``weight`` for the weight of a method's main term and ``<term>_weight`` for the others.
Older names (``T``, ``tau``, ``alpha``, ``w_*``...) still work, as options and as attributes of a
built method, through a method's ``renamed_options``: each with a one-line ``FutureWarning`` naming
the new one, shown once per name in a process.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn

# Messages already shown: a run builds its methods twice (config checks, then training), and the user
# needs to read each rename once. Added only once `warn` returns, so an "error" filter raises every time.
_SHOWN: set[str] = set()


def warn_renamed(message: str, stacklevel: int) -> None:
    """A ``FutureWarning`` (shown to end users by default) of ``message``, once per process;
    ``stacklevel`` counts from the caller of this function, as ``warnings.warn``'s does."""
    if message in _SHOWN:
        return
    warnings.warn(message, FutureWarning, stacklevel=stacklevel + 1)
    _SHOWN.add(message)


class OlderNamesRead(nn.Module):
    """A module that reads each older option name in ``renamed_options`` as its current one
    (``build_method("cwd").tau`` is its ``temperature``), with a ``FutureWarning``: code written
    against the older attributes keeps working. The base of every distillation method."""

    name: ClassVar[str] = ""
    renamed_options: ClassVar[dict[str, str]] = {}

    def __getattr__(self, name: str) -> Any:
        try:  # nn.Module's first: sub-modules, parameters and buffers
            return super().__getattr__(name)
        except AttributeError:
            current = type(self).renamed_options.get(name)
            if current is None:
                raise
        warn_renamed(f"method '{self.name}': attribute '{name}' is deprecated; read '{current}' instead",
                     stacklevel=2)
        return getattr(self, current)


def current_options(method: str, options: Mapping[str, Any], renamed: Mapping[str, str],
                    warn: bool = True) -> dict[str, Any]:
    """``options`` with each old name in ``renamed`` (old → new) replaced by its new name, each with a
    ``FutureWarning`` unless ``warn`` is False (reading a config stored before the rename).

    Raises:
        ValueError: when an option is given under both its old and its new name.
    """
    current = dict(options)
    for old, new in renamed.items():
        if old not in current:
            continue
        if new in current:
            raise ValueError(f"method '{method}': options '{old}' and '{new}' are one option; keep '{new}'")
        if warn:  # attributed to the caller of build_method
            warn_renamed(f"method '{method}': option '{old}' is deprecated; write '{new}' instead", stacklevel=3)
        current[new] = current.pop(old)
    return current


def method_values(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A method entry by what it builds: each older option name under its current one, without the
    options that restate the value the method takes when they are left out (``{name: byot, alpha: 0.1}``
    is ``{name: byot}``: 0.1 is BYOT's default kd_share; a list equals a tuple of the same items). Two
    entries that build the same method compare equal however they are spelled; no warning is shown.

    Raises:
        KeyError: an unknown method.
        ValueError: an unknown option, an option under both names, or a value the method refuses.
    """
    from segkd.distill.base import METHODS, build_method  # here, not above: base imports this module

    name = spec["name"]
    cls = METHODS.get(name)
    options = current_options(name, {k: v for k, v in spec.items() if k != "name"}, cls.renamed_options, warn=False)
    built = build_method({"name": name, **options})  # refuses unknown options and values, naming them
    defaults = cls.defaults()
    kept = {}
    for option, value in options.items():
        default = defaults[option]
        if default is not None:  # left out, the method is built with this very value
            restated = _plain(value) == _plain(default)
        else:  # None: the method picks its value, possibly from other options (Tf-KD's from its mode)
            restated = value is None or _settings(build_method(
                {"name": name, **{k: v for k, v in options.items() if k != option}})) == _settings(built)
        if not restated:
            kept[option] = value
    return {"name": name, **kept}


def _plain(value: Any) -> Any:
    """``value`` with every list made a tuple (YAML gives lists, constructors store tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _settings(method: Any) -> dict[str, Any]:
    """The plain attributes of a built method: what it was built with and derived from its options
    (``nn.Module`` keeps its modules, parameters and buffers in ``_`` attributes)."""
    return {k: v for k, v in vars(method).items() if not k.startswith("_")}


def check_temperature(value: float, method: str, option: str = "temperature") -> float:
    """``value`` when it is a temperature (> 0); otherwise a ``ValueError`` naming method and option."""
    if not value > 0:  # `not >` also refuses NaN
        raise ValueError(f"method '{method}': option '{option}' must be > 0, got {value!r}")
    return value
