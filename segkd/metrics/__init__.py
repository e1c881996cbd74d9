"""Evaluation metrics: semantic confusion-matrix scores, SOD scores, folder evaluation.

Names are imported on first use, so scoring saved binary maps loads neither torch nor the
semantic metric.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SODMetrics": "sod",
    "SegmentationMetric": "semantic",
    "evaluate_folders": "folder",
    "format_table": "folder",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
