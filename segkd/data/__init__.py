"""Data: the binary SOD layout, semseg lists, VOC, Cityscapes, ADE20K and CamVid, joint transforms, a
synthetic generator and data checks. ``build_dataset`` turns a ``DataConfig`` into one.

Names are imported on first use: ``segkd.data.readers`` (numpy and PIL only) serves folder scoring without loading
torch and torchvision.
"""
from __future__ import annotations

from segkd.lazy import lazy_exports

_EXPORTS = {
    "BinarySegDataset": "binary",
    "list_binary_samples": "binary",
    "build_dataset": "build",
    "list_samples": "build",
    "resolve_root": "build",
    "check_data": "checks",
    "ADE20K_CLASSES": "classes",
    "CAMVID_CLASSES": "classes",
    "CITYSCAPES_CLASSES": "classes",
    "layout_palette": "classes",
    "SYNTHETIC_CLASSES": "config",
    "VOC_CLASSES": "config",
    "DataConfig": "config",
    "Split": "config",
    "SyntheticConfig": "config",
    "Task": "config",
    "LAYOUTS": "layouts",
    "DataError": "readers",
    "SamplePaths": "readers",
    "SemanticSegDataset": "semantic",
    "read_pair_list": "semantic",
    "voc_pairs": "semantic",
    "make_synthetic": "synthetic",
    "voc_palette": "classes",
    "build_eval_transform": "transforms",
    "build_train_transform": "transforms",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
