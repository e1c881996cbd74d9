"""Evaluation metrics: semantic confusion-matrix scores, SOD scores, folder evaluation.

Names are imported on first use, so scoring saved binary maps loads neither torch nor the
semantic metric.
"""
from __future__ import annotations

from segkd.lazy import lazy_exports

_EXPORTS = {
    "SODMetrics": "sod",
    "SegmentationMetric": "semantic",
    "evaluate_folders": "folder",
    "format_table": "folder",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
