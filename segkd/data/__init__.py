"""Data: the binary SOD layout, semseg lists, VOC, Cityscapes, ADE20K and CamVid, joint transforms, a synthetic generator
and data checks. ``build_dataset`` / ``build_loader`` turn a ``DataConfig`` into either."""
from segkd.data.binary import BinarySegDataset, list_binary_samples
from segkd.data.build import build_dataset, build_loader, list_samples, resolve_root
from segkd.data.checks import check_data
from segkd.data.classes import ADE20K_CLASSES, CAMVID_CLASSES, CITYSCAPES_CLASSES, layout_palette
from segkd.data.config import (
    SYNTHETIC_CLASSES,
    VOC_CLASSES,
    DataConfig,
    Split,
    SyntheticConfig,
    Task,
)
from segkd.data.layouts import LAYOUTS
from segkd.data.readers import DataError, SamplePaths
from segkd.data.semantic import SemanticSegDataset, read_pair_list, voc_pairs
from segkd.data.synthetic import make_synthetic, voc_palette
from segkd.data.transforms import (
    MultiScaleCollate,
    build_eval_transform,
    build_train_transform,
)

__all__ = [
    "ADE20K_CLASSES",
    "CAMVID_CLASSES",
    "CITYSCAPES_CLASSES",
    "LAYOUTS",
    "SYNTHETIC_CLASSES",
    "VOC_CLASSES",
    "BinarySegDataset",
    "DataConfig",
    "DataError",
    "MultiScaleCollate",
    "SamplePaths",
    "SemanticSegDataset",
    "Split",
    "SyntheticConfig",
    "Task",
    "build_dataset",
    "build_eval_transform",
    "build_loader",
    "build_train_transform",
    "check_data",
    "layout_palette",
    "list_binary_samples",
    "list_samples",
    "make_synthetic",
    "read_pair_list",
    "resolve_root",
    "voc_pairs",
    "voc_palette",
]
