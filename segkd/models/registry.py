"""The model registry: builders registered by name, built from keyword arguments."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from segkd.registry import Registry

ModelBuilder = Callable[..., nn.Module]

MODELS: Registry[ModelBuilder] = Registry("model")


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: register a keyword-only builder function under ``name``.

    Example:
        >>> @register_model("tiny_net")
        ... def tiny_net(*, num_classes: int = 2) -> nn.Module: ...
    """
    return MODELS.register(name)


def builder_options(name: str) -> dict[str, Any]:
    """The keyword arguments of model ``name``'s builder and their defaults."""
    params = inspect.signature(MODELS.get(name)).parameters
    return {
        key: param.default
        for key, param in params.items()
        if param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL)
    }


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``.

    Unknown keyword arguments are an error that names them, so a typo in a config never
    passes silently.

    Example:
        >>> model = build_model("pspnet18", num_classes=21)
    """
    builder = MODELS.get(name)
    params = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ValueError(
                f"model '{name}' has no option(s) {unknown}; its options are {sorted(params)}"
            )
    return builder(**kwargs)
