"""Confusion-matrix metrics for semantic segmentation: mIoU, mAcc, allAcc."""
from __future__ import annotations

from collections.abc import Sequence

import torch


class SegmentationMetric:
    """Accumulates a C×C confusion matrix over a data set and reports IoU / accuracy.

    The convention is the semseg one: intersection (I), union (U) and target (T) pixel counts
    are summed over the whole data set before any ratio is taken, so

    - ``mIoU   = mean_c ΣI_c / ΣU_c``
    - ``mAcc   = mean_c ΣI_c / ΣT_c``
    - ``allAcc = Σ_c ΣI_c / Σ_c ΣT_c`` (pixel accuracy over labelled pixels)

    Classes absent from both the ground truth and the prediction (``U_c = 0``) are left out of
    the means: their IoU is undefined, and counting them as 0 or 1 would make the score depend on
    which classes happen to appear in an evaluation subset. For the same reason ``mAcc`` leaves
    out classes with no ground-truth pixel (``T_c = 0``), whose accuracy (recall) is undefined;
    a class that is predicted but never present still lowers ``mIoU`` (its IoU is 0). Undefined
    per-class values are reported as NaN. Pixels labelled ``ignore_index`` are skipped.

    ``confusion[t, p]`` counts pixels of true class ``t`` predicted as ``p`` (int64, on the
    device of the data). Under DDP, ``all_reduce`` it (sum) before :meth:`compute`.

    Example:
        >>> metric = SegmentationMetric(21)
        >>> metric.update(logits, labels)  # B×21×H×W, B×H×W
        >>> metric.compute()["mIoU"]
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} names but num_classes is {num_classes}"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else [
            str(c) for c in range(num_classes)
        ]
        # With no device given, the matrix follows the first batch it sees (GPU batches stay on GPU).
        self._follow_data_device = device is None
        self.confusion = torch.zeros(
            num_classes, num_classes, dtype=torch.int64, device=device or "cpu"
        )

    def reset(self) -> None:
        """Zero the confusion matrix (keeps its device)."""
        self.confusion.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch.

        Args:
            pred: B×H×W integer class ids, or B×C×H×W scores/logits (argmax over C is taken).
            target: B×H×W integer labels in ``[0, C)`` or ``ignore_index``.

        Raises:
            ValueError: on shape mismatch, or labels / predicted ids outside the valid range
                (the message lists the offending values).
        """
        if pred.dim() == target.dim() + 1:
            if pred.shape[1] != self.num_classes:
                raise ValueError(
                    f"pred scores have {pred.shape[1]} channels but num_classes is {self.num_classes}"
                )
            pred = pred.argmax(dim=1)
        if pred.shape != target.shape:
            raise ValueError(
                f"pred {tuple(pred.shape)} and target {tuple(target.shape)} shapes differ; "
                "expected B×H×W ids (or B×C×H×W scores) and B×H×W labels"
            )
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError(
                f"pred and target must hold integer class ids, got {pred.dtype} and {target.dtype}"
            )
        if self._follow_data_device and self.confusion.device != target.device:
            self.confusion = self.confusion.to(target.device)
        target = target.to(self.confusion.device, torch.int64).reshape(-1)
        pred = pred.to(self.confusion.device, torch.int64).reshape(-1)

        labelled = target != self.ignore_index
        self._check_range(target[labelled], "target label")
        target, pred = target[labelled], pred[labelled]
        self._check_range(pred, "predicted class id")

        counts = torch.bincount(target * self.num_classes + pred, minlength=self.num_classes**2)
        self.confusion += counts.view(self.num_classes, self.num_classes)

    def _check_range(self, values: torch.Tensor, what: str) -> None:
        out_of_range = (values < 0) | (values >= self.num_classes)
        if bool(out_of_range.any()):
            bad = torch.unique(values[out_of_range]).tolist()
            raise ValueError(
                f"{what} values {bad[:20]} are outside [0, {self.num_classes})"
                f" and are not ignore_index={self.ignore_index}"
            )

    def merge(self, other: SegmentationMetric) -> None:
        """Add another metric's counts into this one (e.g. from another process or split)."""
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"cannot merge metrics with {other.num_classes} and {self.num_classes} classes"
            )
        self.confusion += other.confusion.to(self.confusion.device)

    def compute(self) -> dict:
        """Return ``{"mIoU", "mAcc", "allAcc": float, "per_class": {name: {"IoU", "Acc"}}}``.

        Raises:
            RuntimeError: if no labelled pixel has been seen.
        """
        confusion = self.confusion.double().cpu()
        intersection = confusion.diag()
        target_count = confusion.sum(dim=1)
        union = target_count + confusion.sum(dim=0) - intersection
        if target_count.sum() == 0:
            raise RuntimeError("no labelled pixels were accumulated; call update() first")

        nan = torch.tensor(float("nan"), dtype=torch.float64)
        iou = torch.where(union > 0, intersection / union.clamp(min=1), nan)
        acc = torch.where(target_count > 0, intersection / target_count.clamp(min=1), nan)
        return {
            "mIoU": float(iou.nanmean()),
            "mAcc": float(acc.nanmean()),
            "allAcc": float(intersection.sum() / target_count.sum()),
            "per_class": {
                name: {"IoU": float(iou[c]), "Acc": float(acc[c])}
                for c, name in enumerate(self.class_names)
            },
        }
