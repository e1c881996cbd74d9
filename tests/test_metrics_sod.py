from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segkd.metrics import SODMetrics

# Newest release entry holding the classic metrics (later entries add other metrics only).
REFERENCE_VERSION = "v1_4_3"
REFERENCE_KEYS = {
    "MAE": "MAE",
    "Sm": "Smeasure",
    "wFm": "wFmeasure",
    "adpEm": "adpEm",
    "meanEm": "meanEm",
    "maxEm": "maxEm",
    "adpFm": "adpFm",
    "meanFm": "meanFm",
    "maxFm": "maxFm",
}


def _fixture_pairs(shared_data: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    root = shared_data / "pysod_fixtures" / "test_data"
    pairs = []
    for pred_path in sorted((root / "preds").glob("*.png")):
        pred = np.asarray(Image.open(pred_path).convert("L"))
        gt = np.asarray(Image.open(root / "masks" / pred_path.name).convert("L"))
        pairs.append((pred, gt))
    assert len(pairs) == 3
    return pairs


def test_matches_pysodmetrics_reference_values(shared_data: Path) -> None:
    reference_file = shared_data / "pysod_fixtures" / "version_performance.json"
    reference = json.loads(reference_file.read_text())[REFERENCE_VERSION]
    metrics = SODMetrics()
    for pred, gt in _fixture_pairs(shared_data):
        metrics.step(pred, gt)
    results = metrics.get_results()
    for ours, theirs in REFERENCE_KEYS.items():
        assert results[ours] == pytest.approx(reference[theirs], abs=1e-6), ours

    # The data-set-averaged curves behind maxFm_datasetPR, checked against the library's values.
    curves = metrics.curves()
    assert curves["precision"].max() == pytest.approx(reference["maxpre"], abs=1e-6)
    assert curves["recall"].max() == pytest.approx(reference["maxrec"], abs=1e-6)
    assert curves["precision"].mean() == pytest.approx(reference["meanpre"], abs=1e-6)
    assert curves["recall"].mean() == pytest.approx(reference["meanrec"], abs=1e-6)
    assert curves["fmeasure"].max() == pytest.approx(reference["maxFm"], abs=1e-6)


# Two 2×2 images (uint8 0/255). Each prediction is already min-max normalised, so every
# threshold t in 1..255 keeps the 255 pixels and t = 0 keeps all four.
#   A: gt [[1,1],[0,0]], pred [[1,0],[0,0]]
#      t>=1: P 1,   R 1/2 -> F = 1.3*1*0.5 / (0.3*1 + 0.5)    = 0.65/0.8   = 13/16
#      t=0:  P 1/2, R 1   -> F = 1.3*0.5   / (0.15 + 1)       = 0.65/1.15
#      |pred - gt| = 0,1,0,0 -> MAE 1/4
#   B: gt [[1,0],[0,0]], pred [[1,1],[1,0]]
#      t>=1: P 1/3, R 1   -> F = 1.3/3 / (0.1 + 1)             = 13/33
#      t=0:  P 1/4, R 1   -> F = 0.325 / 1.075
#      |pred - gt| = 0,1,1,0 -> MAE 1/2
# MAE = (1/4 + 1/2) / 2 = 3/8
# maxFm (mean per-image F curve): t>=1 -> (13/16 + 13/33) / 2 = 637/1056 ≈ 0.60322
# maxFm_datasetPR: t>=1 -> P = (1 + 1/3)/2 = 2/3, R = (1/2 + 1)/2 = 3/4,
#                  F = 1.3*(2/3)*(3/4) / (0.3*(2/3) + 3/4) = 0.65/0.95 = 13/19 ≈ 0.68421
GT_A = np.array([[255, 255], [0, 0]], dtype=np.uint8)
PRED_A = np.array([[255, 0], [0, 0]], dtype=np.uint8)
GT_B = np.array([[255, 0], [0, 0]], dtype=np.uint8)
PRED_B = np.array([[255, 255], [255, 0]], dtype=np.uint8)


def _two_image_metrics() -> SODMetrics:
    metrics = SODMetrics()
    metrics.step(PRED_A, GT_A)
    metrics.step(PRED_B, GT_B)
    return metrics


def test_hand_computed_mae_and_both_max_f() -> None:
    results = _two_image_metrics().get_results()
    assert results["MAE"] == pytest.approx(3 / 8)
    assert results["maxFm"] == pytest.approx(637 / 1056)
    assert results["maxFm_datasetPR"] == pytest.approx(13 / 19)
    assert results["maxFm_datasetPR"] - results["maxFm"] > 0.08


def test_curves_are_ascending_in_threshold() -> None:
    curves = _two_image_metrics().curves()
    assert all(curve.shape == (256,) for curve in curves.values())
    assert curves["thresholds"][0] == 0.0 and curves["thresholds"][-1] == 1.0
    # threshold 0 keeps every pixel: P = (1/2 + 1/4)/2, R = 1
    assert curves["precision"][0] == pytest.approx(0.375)
    assert curves["recall"][0] == pytest.approx(1.0)
    assert curves["precision"][1] == pytest.approx(2 / 3)
    assert curves["recall"][-1] == pytest.approx(0.75)
    assert curves["fmeasure"][-1] == pytest.approx(637 / 1056)


def test_float_and_tensor_inputs_match_uint8() -> None:
    from_floats = SODMetrics()
    from_floats.step(torch.from_numpy(PRED_A / 255.0)[None], torch.from_numpy(GT_A > 128))
    from_floats.step(PRED_B.astype(np.float32) / 255.0, (GT_B / 255.0).astype(np.float32))
    assert from_floats.get_results() == _two_image_metrics().get_results()


def test_prediction_is_resized_to_mask() -> None:
    # A 4×4 block copy of PRED_A resizes bilinearly back to exactly PRED_A's pattern at 2×2.
    big_pred = np.kron(PRED_A, np.ones((2, 2), dtype=np.uint8))
    metrics = SODMetrics()
    metrics.step(big_pred, GT_A)
    assert metrics.get_results()["MAE"] == pytest.approx(1 / 4)


def test_state_merge_equals_one_process_in_any_order(shared_data: Path) -> None:
    pairs = _fixture_pairs(shared_data) + [(PRED_A, GT_A), (PRED_B, GT_B)]
    whole = SODMetrics()
    for pred, gt in pairs:
        whole.step(pred, gt)
    even, odd = SODMetrics(), SODMetrics()
    for index, (pred, gt) in enumerate(pairs):
        (even if index % 2 == 0 else odd).step(pred, gt)

    merged = SODMetrics()
    merged.merge_state(pickle.loads(pickle.dumps(odd.state())))
    merged.merge_state(pickle.loads(pickle.dumps(even.state())))
    assert merged.num_images == len(pairs)
    assert merged.get_results() == whole.get_results()
    for key, curve in whole.curves().items():
        np.testing.assert_array_equal(merged.curves()[key], curve)


def test_merge_state_rejects_foreign_state() -> None:
    with pytest.raises(ValueError, match="state keys"):
        SODMetrics().merge_state({"mae": [0.1]})


def test_bad_inputs_are_reported() -> None:
    metrics = SODMetrics()
    with pytest.raises(ValueError, match=r"range \[-2.0, 3.0\]"):
        metrics.step(np.array([[-2.0, 3.0]]), GT_A[:1])
    with pytest.raises(ValueError, match="values 0/1"):
        metrics.step(PRED_A, (GT_A > 0).astype(np.uint8))
    with pytest.raises(ValueError, match=r"gt must be H×W"):
        metrics.step(PRED_A, np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(RuntimeError, match="no images"):
        metrics.get_results()


def test_the_faster_metric_classes_equal_pysodmetrics_on_varied_masks():
    import py_sod_metrics as pysod
    from py_sod_metrics.utils import prepare_data

    from segkd.metrics.sod import Emeasure, FmeasureV2, WeightedFmeasure

    def handlers():
        return {"fm": pysod.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=0.3),
                "precision": pysod.PrecisionHandler(with_dynamic=True, with_adaptive=False)}

    rng = np.random.default_rng(3)
    pairs = [(WeightedFmeasure(), pysod.WeightedFmeasure()), (Emeasure(), pysod.Emeasure()),
             (FmeasureV2(handlers()), pysod.FmeasureV2(handlers()))]
    for index in range(40):
        height, width = rng.integers(5, 90, size=2)
        mask = np.zeros((height, width), dtype=np.uint8)
        for _ in range(rng.integers(0, 4)):  # blobs, some touching the border; index 0: no foreground
            top, left = rng.integers(0, height), rng.integers(0, width)
            mask[top: top + rng.integers(1, height), left: left + rng.integers(1, width)] = 255
        if index == 1:
            mask[:] = 255
        pred = np.clip(mask * rng.uniform(0, 1) + rng.normal(0, 60, mask.shape), 0, 255).astype(np.uint8)
        if index == 2:
            pred[:] = 90  # a flat map
        pred_unit, gt_bool = prepare_data(pred, mask)
        for ours, reference in pairs:
            ours.step(pred_unit, gt_bool, normalize=False)
            reference.step(pred_unit, gt_bool, normalize=False)
    (wfm, wfm_ref), (em, em_ref), (fm, fm_ref) = pairs
    assert np.allclose(wfm.weighted_fms, wfm_ref.weighted_fms, rtol=0, atol=1e-12)
    assert len(set(np.round(wfm.weighted_fms, 6))) > 20  # varied cases, not one value
    assert np.array_equal(em.changeable_ems, em_ref.changeable_ems) and em.adaptive_ems == em_ref.adaptive_ems
    results, expected = fm.get_results(), fm_ref.get_results()
    for name in ("fm", "precision"):
        assert np.array_equal(results[name]["dynamic"], expected[name]["dynamic"])
    assert results["fm"]["adaptive"] == expected["fm"]["adaptive"]
