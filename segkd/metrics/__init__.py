"""Evaluation metrics: semantic confusion-matrix scores, SOD scores, folder evaluation."""
from segkd.metrics.folder import evaluate_folders, format_table
from segkd.metrics.semantic import SegmentationMetric
from segkd.metrics.sod import SODMetrics

__all__ = ["SODMetrics", "SegmentationMetric", "evaluate_folders", "format_table"]
