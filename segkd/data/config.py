"""The ``data:`` section of a segkd config: where the data lives and how it is transformed."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from segkd.data.classes import ADE20K_CLASSES, CAMVID_CLASSES, CITYSCAPES_CLASSES

Task = Literal["semantic", "binary"]
Split = Literal["train", "val"]

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

# Class order of the synthetic semantic set: class k > 0 is the k-th shape type.
SYNTHETIC_CLASSES: tuple[str, ...] = (
    "background", "circle", "rectangle", "triangle", "ellipse", "ring", "diamond",
)  # fmt: skip

# Semantic: ImageNet statistics scaled to 0-255 RGB (the semseg convention).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# Binary: the statistics F3Net-style code bases normalise with (0-255 RGB).
F3NET_MEAN = (124.55, 118.90, 102.94)
F3NET_STD = (56.77, 55.97, 57.50)

Triple = tuple[float, float, float]

# Layouts of public data sets whose class list is fixed (see segkd.data.layouts).
LAYOUT_CLASSES: dict[str, tuple[str, ...]] = {
    "cityscapes": CITYSCAPES_CLASSES, "ade20k": ADE20K_CLASSES, "camvid": CAMVID_CLASSES,
}


class SyntheticConfig(BaseModel):
    """Size and seed of the generated synthetic data set (layout ``synthetic``)."""

    model_config = ConfigDict(extra="forbid")

    num_train: int = Field(48, ge=1, description="Number of training images.")
    num_val: int = Field(16, ge=1, description="Number of validation (binary: test) images.")
    image_size: int = Field(64, ge=16, description="Side of the square images, in pixels.")
    num_classes: int = Field(
        4,
        ge=2,
        le=len(SYNTHETIC_CLASSES),
        description="Semantic task: classes including background (each other class is a shape "
        "type). Ignored by the binary task.",
    )
    seed: int = Field(0, ge=0, description="Seed; the same seed always gives the same images.")
    label_noise: float = Field(
        0.0, ge=0.0, le=1.0,
        description="Probability that a shape in a training image is mislabelled: as another "
        "shape class (semantic task: annotators confuse classes) or left out of the mask (binary "
        "task: annotators miss objects). Validation and test labels stay clean; a part held out "
        "of the training list (data.holdout) keeps its noise.",
    )


class DataConfig(BaseModel):
    """Data set layout, splits, transforms and loader settings.

    Example:
        >>> DataConfig(layout="voc", root="VOC2012", voc_aug=True, train_split="train_aug")
    """

    model_config = ConfigDict(extra="forbid")

    layout: Literal["binary", "semseg_list", "voc", "synthetic", "cityscapes", "ade20k", "camvid"] = Field(
        "synthetic",
        description="binary: ROOT/Image, ROOT/Mask and ROOT/{split}.txt of names; semseg_list: "
        "list files of 'image_relpath label_relpath' lines; voc: the VOC 2012 folder layout; "
        "synthetic: a generated set of textured shapes; cityscapes / ade20k / camvid: those data "
        "sets' own folders, labels mapped to train ids (see segkd.data.layouts).",
    )
    root: Path | None = Field(
        None,
        description="Data set folder. Required for every layout but synthetic; for synthetic it is "
        "where the set is generated (default ./data/synthetic-{task}), created if missing.",
    )
    train_split: str = Field(
        "train",
        description="Training split: binary -> ROOT/{split}.txt; voc -> "
        "ROOT/ImageSets/Segmentation/{split}.txt; semseg_list -> a list file relative to ROOT "
        "(a bare name x also tries x.txt).",
    )
    val_split: str | None = Field(
        None,
        description="Validation split, read like train_split. None: 'test' for binary tasks, "
        "'val' for semantic tasks.",
    )
    holdout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Fraction of the training list held out for choosing models and "
        "hyper-parameters (semantic and binary tasks). Training then reads the rest, and "
        "val_split 'holdout' reads the held-out part; which samples are held out depends only on "
        "their names.",
    )
    voc_aug: bool = Field(
        False, description="voc layout: read labels from SegmentationClassAug/ (SBD-augmented)."
    )
    num_classes: int = Field(
        21,
        ge=1,
        description="Semantic classes including background. Binary tasks always predict one "
        "foreground channel and ignore this. For layout synthetic it follows "
        "synthetic.num_classes; cityscapes, ade20k and camvid set it (19, 150, 11).",
    )
    class_names: list[str] | None = Field(
        None,
        description="One name per class. None: the VOC names when num_classes is 21, the shape "
        "names for the synthetic set, the data set's names for cityscapes / ade20k / camvid, "
        "else class0, class1, ...",
    )
    ignore_index: int = Field(255, ge=0, description="Label value excluded from loss and metrics.")

    crop_size: int = Field(473, ge=1, description="Semantic training crop side (8k+1 in semseg).")
    scale_range: tuple[float, float] = Field(
        (0.5, 2.0), description="Semantic training: random scale factor range."
    )
    rotate: tuple[float, float] = Field(
        (-10.0, 10.0),
        description="Semantic training: rotation range in degrees, applied with p 0.5; "
        "(0, 0) = off.",
    )
    blur: bool = Field(True, description="Semantic training: Gaussian blur 5x5 with p 0.5.")
    flip: bool = Field(True, description="Training: horizontal flip with p 0.5.")
    base_size: int = Field(
        512, ge=1, description="Semantic evaluation: the long side is resized to scale * base_size."
    )
    long_side: int | None = Field(
        None,
        ge=8,
        description="Semantic: resize each image (bilinear) and label (nearest) so its long side "
        "is this many pixels when it is read, for training and evaluation alike; metrics are then "
        "computed at that size. None: native size.",
    )

    train_size: int = Field(352, ge=1, description="Binary training: side images are resized to.")
    multiscale_sizes: list[int] = Field(
        [224, 256, 288, 320, 352],
        description="Binary training: each batch is resized to one size drawn from this list "
        "(empty = off).",
    )
    test_size: int = Field(352, ge=1, description="Binary evaluation: side images are resized to.")

    mean: Triple | None = Field(
        None,
        description="RGB mean on 0-255 values. None: ImageNet mean x 255 (semantic) or F3Net's "
        "[124.55, 118.90, 102.94] (binary).",
    )
    std: Triple | None = Field(
        None,
        description="RGB std on 0-255 values. None: ImageNet std x 255 (semantic) or F3Net's "
        "[56.77, 55.97, 57.50] (binary).",
    )

    batch_size: int = Field(8, ge=1, description="Training batch size (per process).")
    val_batch_size: int = Field(1, ge=1, description="Validation batch size.")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes.")

    synthetic: SyntheticConfig = Field(
        default_factory=SyntheticConfig, description="Settings of the synthetic set."
    )

    @field_validator("scale_range", "rotate")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] > value[1]:
            raise ValueError(f"expected (low, high) with low <= high, got {value}")
        return value

    @field_validator("scale_range")
    @classmethod
    def _positive_scale(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] <= 0:
            raise ValueError(f"scale factors must be > 0, got {value}")
        return value

    @field_validator("multiscale_sizes")
    @classmethod
    def _positive_sizes(cls, value: list[int]) -> list[int]:
        if any(size < 1 for size in value):
            raise ValueError(f"sizes must be >= 1, got {value}")
        return value

    @field_validator("std")
    @classmethod
    def _nonzero_std(cls, value: Triple | None) -> Triple | None:
        if value is not None and any(s <= 0 for s in value):
            raise ValueError(f"std values must be > 0, got {value}")
        return value

    @model_validator(mode="after")
    def _resolve(self) -> DataConfig:
        if self.layout != "synthetic" and self.root is None:
            raise ValueError(f"root: a data folder is required for layout '{self.layout}'")
        if self.layout == "synthetic":
            if "num_classes" not in self.model_fields_set:
                self.num_classes = self.synthetic.num_classes
            elif self.num_classes != self.synthetic.num_classes:
                raise ValueError(
                    f"num_classes ({self.num_classes}) differs from synthetic.num_classes "
                    f"({self.synthetic.num_classes}); the synthetic set decides the class count"
                )
        if self.layout in LAYOUT_CLASSES:
            count = len(LAYOUT_CLASSES[self.layout])
            if "num_classes" not in self.model_fields_set:
                self.num_classes = count
            elif self.num_classes != count:
                raise ValueError(
                    f"num_classes ({self.num_classes}) differs from the {count} classes of layout "
                    f"'{self.layout}'; leave num_classes out"
                )
        if self.class_names is None:
            self.class_names = _default_class_names(self.layout, self.num_classes)
        elif len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names but num_classes is "
                f"{self.num_classes}"
            )
        return self

    def split_name(self, task: Task, split: Split) -> str:
        """The list name read for ``split``: ``train_split`` or the resolved ``val_split``."""
        if split == "train":
            return self.train_split
        if self.val_split is not None:
            return self.val_split
        return "test" if task == "binary" else "val"

    def normalization(self, task: Task) -> tuple[Triple, Triple]:
        """``(mean, std)`` on 0-255 RGB, falling back to the task's defaults."""
        default_mean, default_std = (
            (F3NET_MEAN, F3NET_STD) if task == "binary" else (IMAGENET_MEAN, IMAGENET_STD)
        )
        return self.mean or default_mean, self.std or default_std


def _default_class_names(layout: str, num_classes: int) -> list[str]:
    if layout == "synthetic":
        return list(SYNTHETIC_CLASSES[:num_classes])
    if layout in LAYOUT_CLASSES:
        return list(LAYOUT_CLASSES[layout])
    if num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return [f"class{index}" for index in range(num_classes)]
