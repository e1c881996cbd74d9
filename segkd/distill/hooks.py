"""Capture intermediate outputs of any ``nn.Module`` with forward hooks."""
from __future__ import annotations

import difflib
from collections.abc import Mapping

import torch
from torch import nn


def resolve_path(model: nn.Module, path: str) -> str:
    """Translate a feature-point alias (``model.feature_points``) into a module path."""
    points: Mapping[str, str] = getattr(model, "feature_points", {})
    return points.get(path, path)


class FeatureTaps:
    """Record the outputs of named sub-modules during a forward pass.

    Args:
        model: any module.
        taps: ``{local_name: module_path_or_feature_point}``; feature-point aliases are
            looked up in ``model.feature_points`` first.

    Use it as a context manager, so the hooks are removed however the block ends (an error
    included); a wrong tap path raises before any hook stays behind.

    Example:
        >>> with FeatureTaps(model, {"c4": "backbone.layer4"}) as taps:
        ...     out = model(x)
        ...     feats = taps.pop()   # {"c4": tensor}
    """

    def __init__(self, model: nn.Module, taps: Mapping[str, str]) -> None:
        modules = dict(model.named_modules())
        self._store: dict[str, torch.Tensor] = {}
        self._handles = []
        for name, spec in taps.items():
            path = resolve_path(model, spec)
            if path not in modules:
                self.remove()  # the taps hooked before this one must not stay on the model
                close = difflib.get_close_matches(path, list(modules), n=5)
                points = sorted(getattr(model, "feature_points", {}))
                raise KeyError(
                    f"tap '{name}': {type(model).__name__} has no module '{path}'. "
                    f"Feature points: {points}. Close module names: {close}"
                )
            self._handles.append(modules[path].register_forward_hook(self._make_hook(name)))

    def _make_hook(self, name: str):
        def hook(_module: nn.Module, _inputs, output) -> None:
            if isinstance(output, (tuple, list)):
                output = output[0]
            self._store[name] = output

        return hook

    def pop(self) -> dict[str, torch.Tensor]:
        """Return what was captured since the last call and forget it."""
        out, self._store = self._store, {}
        return out

    def peek(self) -> dict[str, torch.Tensor]:
        """What was captured since the last ``pop``, kept for it."""
        return dict(self._store)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._store = {}

    def __enter__(self) -> FeatureTaps:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
