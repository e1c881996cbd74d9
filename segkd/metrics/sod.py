"""Salient / camouflaged object metrics on grey prediction maps, built on pysodmetrics."""
from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
import py_sod_metrics as pysod
from py_sod_metrics.utils import EPS, prepare_data
from scipy.ndimage import correlate1d, distance_transform_edt

# torch is imported only to resize a map or read a tensor: scoring saved maps needs no torch.
if TYPE_CHECKING:
    import torch

    ArrayLike = np.ndarray | torch.Tensor

BETA_SQUARED = 0.3  # precision weight of the SOD F-measure (Achanta et al. 2009)
NUM_THRESHOLDS = 256


class SODMetrics:
    """MAE, F-measure, S-measure, E-measure and weighted F-measure over a data set.

    Per-image scores come from pysodmetrics' classes (E-measure, FmeasureV2 and the weighted
    F-measure through subclasses below that compute the same numbers faster; tests hold them
    equal), which follow the MATLAB reference code: each
    prediction is min-max normalised, the mask is binarised at > 128, and the dynamic curves use
    256 thresholds on the map quantised to 0–255. Every score is a mean over images.

    Two maximum F-measures (β² = 0.3) are reported, because the literature uses both:

    - ``maxFm`` (pysodmetrics): F is computed per image and threshold, averaged over images into
      one F curve, and its maximum is taken.
    - ``maxFm_datasetPR`` (classic SOD benchmark): precision and recall are each averaged over
      images per threshold, F is computed from those two averaged curves, and its maximum is
      taken. As F is not linear in P and R the two differ; this one is usually higher.

    ``adpFm`` / ``adpEm`` binarise each map at twice its mean (capped at 1); ``meanFm`` /
    ``meanEm`` average the curves over thresholds.

    For distributed evaluation each process steps its own images, then ``state()`` objects are
    gathered and merged into one instance with :meth:`merge_state`. Means are taken with
    ``math.fsum`` so the result is bit-identical to one process, whatever the image order.

    Example:
        >>> metrics = SODMetrics()
        >>> metrics.step(pred_uint8_hw, gt_uint8_hw)
        >>> metrics.get_results()["Sm"]
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._mae = pysod.MAE()
        self._smeasure = pysod.Smeasure()
        self._emeasure = Emeasure()
        self._weighted_fmeasure = WeightedFmeasure()
        # FmeasureV2 derives all three from one TP/FP histogram per image.
        self._fm = pysod.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=BETA_SQUARED)
        self._precision = pysod.PrecisionHandler(with_dynamic=True, with_adaptive=False)
        self._recall = pysod.RecallHandler(with_dynamic=True, with_adaptive=False)
        self._fmeasure = FmeasureV2(
            {"fm": self._fm, "precision": self._precision, "recall": self._recall}
        )

    def step(self, pred: ArrayLike, gt: ArrayLike) -> None:
        """Add one image.

        Args:
            pred: H×W prediction, uint8 in 0–255 or float in [0, 1] (stored as round(p·255),
                the value a saved PNG map would hold). Resized bilinearly to the size of ``gt``
                when they differ. Leading singleton dimensions (1×H×W) are dropped.
            gt: H×W mask: bool, uint8 0/255 (foreground > 128), or float (foreground > 0.5).

        Raises:
            ValueError: on out-of-range values, a uint8 mask that holds only 0 and 1, or
                non-2-D inputs. TypeError on unsupported dtypes.
        """
        gt_uint8 = _gt_to_uint8(_as_2d_numpy(gt, "gt"))
        pred_uint8 = _pred_to_uint8(_as_2d_numpy(pred, "pred"), size=gt_uint8.shape)
        # Each pysodmetrics step would min-max normalise the pair again; normalising once with
        # the library's own prepare_data gives the very same arrays at a fifth of the cost.
        pred_unit, gt_bool = prepare_data(pred_uint8, gt_uint8)
        for metric in (self._mae, self._smeasure, self._emeasure, self._weighted_fmeasure, self._fmeasure):
            metric.step(pred_unit, gt_bool, normalize=False)

    @property
    def num_images(self) -> int:
        return len(self._mae.maes)

    def _per_image_lists(self) -> dict[str, list[Any]]:
        """The live per-image records inside the pysodmetrics objects, keyed by a stable name."""
        return {
            "mae": self._mae.maes,
            "sm": self._smeasure.sms,
            "wfm": self._weighted_fmeasure.weighted_fms,
            "adp_em": self._emeasure.adaptive_ems,
            "em_curve": self._emeasure.changeable_ems,
            "adp_fm": self._fm.adaptive_results,
            "fm_curve": self._fm.dynamic_results,
            "precision_curve": self._precision.dynamic_results,
            "recall_curve": self._recall.dynamic_results,
        }

    def state(self) -> dict[str, list[Any]]:
        """A picklable copy of the per-image records (floats and 256-long arrays)."""
        return {key: list(values) for key, values in self._per_image_lists().items()}

    def merge_state(self, state: dict[str, list[Any]]) -> None:
        """Append the images recorded in another instance's :meth:`state`."""
        own = self._per_image_lists()
        if set(state) != set(own):
            raise ValueError(f"state keys {sorted(state)} do not match expected {sorted(own)}")
        lengths = {key: len(values) for key, values in state.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"state lists have different lengths: {lengths}")
        for key, values in state.items():
            own[key].extend(values)

    def _averaged(self) -> dict[str, np.ndarray]:
        if self.num_images == 0:
            raise RuntimeError("SODMetrics has no images; call step() first")
        return {key: _order_free_mean(values) for key, values in self._per_image_lists().items()}

    def get_results(self) -> dict[str, float]:
        """Return ``MAE, maxFm, meanFm, adpFm, Sm, maxEm, meanEm, adpEm, wFm, maxFm_datasetPR``."""
        mean = self._averaged()
        dataset_pr_fm = _fmeasure(mean["precision_curve"], mean["recall_curve"])
        return {
            "MAE": float(mean["mae"]),
            "maxFm": float(mean["fm_curve"].max()),
            "meanFm": float(mean["fm_curve"].mean()),
            "adpFm": float(mean["adp_fm"]),
            "Sm": float(mean["sm"]),
            "maxEm": float(mean["em_curve"].max()),
            "meanEm": float(mean["em_curve"].mean()),
            "adpEm": float(mean["adp_em"]),
            "wFm": float(mean["wfm"]),
            "maxFm_datasetPR": float(dataset_pr_fm.max()),
        }

    def curves(self) -> dict[str, np.ndarray]:
        """Curves over 256 thresholds for PR and F-vs-threshold plots, thresholds ascending.

        Returns arrays of length 256: ``thresholds`` (t/255 for t = 0..255; a pixel is
        foreground when its normalised, 0–255 quantised value is ≥ t), ``precision`` and
        ``recall`` (each averaged over images), ``fmeasure`` (the mean per-image F curve, whose
        max is ``maxFm``).
        """
        mean = self._averaged()
        # pysodmetrics orders its curves from threshold 255 down to 0.
        return {
            "thresholds": np.arange(NUM_THRESHOLDS, dtype=np.float64) / 255.0,
            "precision": mean["precision_curve"][::-1].copy(),
            "recall": mean["recall_curve"][::-1].copy(),
            "fmeasure": mean["fm_curve"][::-1].copy(),
        }


def _histograms(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of the map quantised to 0-255 (as pysodmetrics does) on the background and on the
    foreground: the histograms pysodmetrics takes with ``np.histogram`` over 256 unit bins, from
    one ``bincount`` (several times faster; integer counts, so identical)."""
    quantised = (pred * 255).astype(np.uint8)
    joint = np.bincount(quantised.ravel().astype(np.intp) + 256 * gt.ravel(), minlength=512)
    return joint[:256], joint[256:]


class FmeasureV2(pysod.FmeasureV2):
    """pysodmetrics' FmeasureV2 with its per-threshold TP / FP counts taken from one bincount."""

    def dynamically_binarizing(self, pred: np.ndarray, gt: np.ndarray, FG: int, BG: int) -> dict:  # noqa: N803
        background_hist, foreground_hist = _histograms(pred, gt)
        true_positives, false_positives = np.cumsum(foreground_hist[::-1]), np.cumsum(background_hist[::-1])
        return {"tp": true_positives, "fp": false_positives, "tn": BG - false_positives, "fn": FG - true_positives}


class Emeasure(pysod.Emeasure):
    """pysodmetrics' E-measure curve with its histograms taken from one bincount; the alignment
    and enhancement steps are pysodmetrics' own (``generate_parts_numel_combinations``)."""

    def cal_em_with_cumsumhistogram(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        background_hist, foreground_hist = _histograms(pred, gt)
        fg_fg = np.cumsum(foreground_hist[::-1])  # predicted foreground on true foreground, per threshold
        fg_bg = np.cumsum(background_hist[::-1])
        pred_fg = fg_fg + fg_bg
        pred_bg = self.gt_size - pred_fg
        if self.gt_fg_numel == 0:
            enhanced_sum = pred_bg
        elif self.gt_fg_numel == self.gt_size:
            enhanced_sum = pred_fg
        else:
            parts, combinations = self.generate_parts_numel_combinations(
                fg_fg_numel=fg_fg, fg_bg_numel=fg_bg, pred_fg_numel=pred_fg, pred_bg_numel=pred_bg)
            enhanced = np.empty((4, 256), dtype=np.float64)
            for i, (part, (a, b)) in enumerate(zip(parts, combinations)):
                align = 2 * (a * b) / (a**2 + b**2 + EPS)
                enhanced[i] = (align + 1) ** 2 / 4 * part
            enhanced_sum = enhanced.sum(axis=0)
        return enhanced_sum / (self.gt_size - 1 + EPS)


class WeightedFmeasure(pysod.WeightedFmeasure):
    """pysodmetrics' weighted F-measure (Margolin et al. 2014), the same sums computed faster.

    The 7×7 Gaussian (σ 5) is applied as two 1-D passes (it is the outer product of one 1-D
    kernel), the error at each background pixel's nearest foreground pixel is read with one
    gather, distances are taken from the nearest-pixel indices for background pixels only, and
    masks are built once. The result equals pysodmetrics' to rounding (about 1e-16;
    a test holds it to 1e-10), at about half the cost per image.
    """

    def cal_wfm(self, pred: np.ndarray, gt: np.ndarray) -> float:
        background = ~gt
        # scipy's distances from its own indices cost more than the indices; only background needs them
        nearest = distance_transform_edt(background, return_distances=False, return_indices=True)
        rows, cols = nearest[0] - np.arange(gt.shape[0])[:, None], nearest[1] - np.arange(gt.shape[1])
        distance = np.sqrt((rows * rows + cols * cols)[background])
        error = np.abs(pred - gt)
        # a foreground pixel's nearest foreground pixel is itself: one gather serves every pixel
        error_at_edge = error[nearest[0], nearest[1]]
        blurred = correlate1d(error_at_edge, GAUSS_7_SIGMA_5, axis=0, mode="constant", cval=0)
        blurred = correlate1d(blurred, GAUSS_7_SIGMA_5, axis=1, mode="constant", cval=0)
        weighted = np.where(gt & (blurred < error), blurred, error)
        weighted[background] *= 2 - np.exp(np.log(0.5) / 5 * distance)
        error_fg, error_bg = weighted[gt], weighted[background]
        true_positive = np.sum(gt) - np.sum(error_fg)
        recall = 1 - np.mean(error_fg)
        precision = true_positive / (true_positive + np.sum(error_bg) + EPS)
        return (1 + self.beta) * recall * precision / (recall + self.beta * precision + EPS)


def _gauss_1d(size: int, sigma: float) -> np.ndarray:
    """The 1-D factor of MATLAB's fspecial('gaussian', size, sigma), normalised to sum 1."""
    x = np.arange(size) - (size - 1) / 2
    kernel = np.exp(-(x * x) / (2 * sigma * sigma))
    return kernel / kernel.sum()


GAUSS_7_SIGMA_5 = _gauss_1d(7, 5.0)


def _fmeasure(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """F_β with β² = 0.3, 0 where precision and recall are both 0."""
    numerator = (1 + BETA_SQUARED) * precision * recall
    denominator = BETA_SQUARED * precision + recall
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _order_free_mean(values: list[Any]) -> np.ndarray:
    """Mean over the first axis with exactly rounded sums, so image order cannot change a bit."""
    stacked = np.asarray(values, dtype=np.float64)
    if stacked.ndim == 1:
        return np.asarray(math.fsum(stacked) / len(stacked))
    return np.array([math.fsum(column) for column in stacked.T]) / len(stacked)


def _as_2d_numpy(array: ArrayLike, name: str) -> np.ndarray:
    torch = sys.modules.get("torch")  # a tensor can only exist where torch was imported
    if torch is not None and isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"{name} must be H×W (or 1×H×W), got shape {array.shape}")
    return array


def _gt_to_uint8(gt: np.ndarray) -> np.ndarray:
    """Mask as uint8 0/255-style, the input convention of pysodmetrics (foreground > 128)."""
    if gt.dtype == np.bool_:
        return gt.astype(np.uint8) * 255
    if gt.dtype == np.uint8:
        if gt.max() == 1:
            # A 0/1 mask would silently read as all background at the > 128 threshold.
            raise ValueError("gt is uint8 with values 0/1; pass it as bool or scale it to 0/255")
        return gt
    if np.issubdtype(gt.dtype, np.floating):
        return (gt > 0.5).astype(np.uint8) * 255
    raise TypeError(f"gt must be bool, uint8 or float, got {gt.dtype}")


def _pred_to_uint8(pred: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Prediction as an H×W uint8 map of the given size (bilinear resize when needed)."""
    if pred.dtype == np.uint8:
        if pred.shape == size:
            return pred
        unit = pred.astype(np.float32) / 255.0
    elif np.issubdtype(pred.dtype, np.floating):
        unit = pred.astype(np.float32)
        low, high = float(unit.min()), float(unit.max())
        if low < 0.0 or high > 1.0 or math.isnan(low + high):
            raise ValueError(
                f"float pred must hold probabilities in [0, 1], got range [{low}, {high}]"
                " (apply sigmoid to logits first)"
            )
    else:
        raise TypeError(f"pred must be uint8 or float, got {pred.dtype}")
    if unit.shape != size:
        unit = _resize_bilinear(unit, size)
    return np.clip(np.round(unit * 255.0), 0, 255).astype(np.uint8)


def _resize_bilinear(unit: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """H×W float32 map resized like ``F.interpolate(..., mode="bilinear", align_corners=False)``."""
    import torch
    import torch.nn.functional as F

    resized = F.interpolate(torch.from_numpy(unit)[None, None], size=size, mode="bilinear", align_corners=False)
    return resized[0, 0].numpy()
