from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkd.metrics import SODMetrics, evaluate_folders, format_table


def _save_grey(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode="L").save(path)


def _binary_masks() -> dict[str, np.ndarray]:
    # "a": 32×32 with a 16×16 square; "b": 40×48 with a 10×12 block (fraction 120/1920 = 1/16).
    mask_a = np.zeros((32, 32), dtype=np.uint8)
    mask_a[8:24, 8:24] = 255
    mask_b = np.zeros((40, 48), dtype=np.uint8)
    mask_b[10:20, 12:24] = 255
    return {"a": mask_a, "b": mask_b}


def test_binary_folders_pair_by_stem_and_resize(tmp_path: Path) -> None:
    masks = _binary_masks()
    _save_grey(masks["a"], tmp_path / "gt" / "a.bmp")
    _save_grey(masks["b"], tmp_path / "gt" / "b.png")
    # "a" is predicted perfectly; "b" is an all-black map at half size saved as JPEG.
    _save_grey(masks["a"], tmp_path / "pred" / "a.png")
    _save_grey(np.zeros((20, 24), dtype=np.uint8), tmp_path / "pred" / "b.jpg")

    result = evaluate_folders(tmp_path / "pred", tmp_path / "gt")

    assert result["task"] == "binary"
    assert result["num_images"] == 2
    # MAE: 0 for "a", the foreground fraction 1/16 for the all-zero "b".
    assert result["metrics"]["MAE"] == pytest.approx((0 + 1 / 16) / 2)
    expected = SODMetrics()
    expected.step(masks["a"], masks["a"])
    expected.step(np.zeros((40, 48), dtype=np.uint8), masks["b"])
    assert result["metrics"] == pytest.approx(expected.get_results())


def test_missing_prediction_is_named(tmp_path: Path) -> None:
    masks = _binary_masks()
    for name, mask in masks.items():
        _save_grey(mask, tmp_path / "gt" / f"{name}.png")
    _save_grey(masks["a"], tmp_path / "pred" / "a.png")
    with pytest.raises(FileNotFoundError, match=r"1 mask\(s\) .* have no prediction .*: b$"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt")


def test_prediction_without_mask_warns_and_is_skipped(tmp_path: Path) -> None:
    mask = _binary_masks()["a"]
    _save_grey(mask, tmp_path / "gt" / "a.png")
    _save_grey(mask, tmp_path / "pred" / "a.png")
    _save_grey(mask, tmp_path / "pred" / "extra.png")
    with pytest.warns(UserWarning, match="no mask .*: extra"):
        result = evaluate_folders(tmp_path / "pred", tmp_path / "gt")
    assert result["num_images"] == 1


def test_ambiguous_names_are_rejected(tmp_path: Path) -> None:
    mask = _binary_masks()["a"]
    _save_grey(mask, tmp_path / "gt" / "a.png")
    _save_grey(mask, tmp_path / "pred" / "a.png")
    _save_grey(mask, tmp_path / "pred" / "a.jpg")
    with pytest.raises(ValueError, match="'a' is ambiguous: a.jpg and a.png"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt")


# Semantic case: a 4×4 label grid blown up 2× to an 8×8 palette mask; the prediction is saved
# as a 4×4 grey map and upsampled (nearest) back to 8×8, so each low-res pixel covers 4 pixels.
#   gt (4×4)            pred (4×4)
#   0 0 1 1             1 0 1 1        one class-0 pixel predicted as 1,
#   0 0 1 1             0 0 1 1        the ignored pixels predicted as 0
#   2 2 255 255         2 2 0 0
#   2 2 2 2             2 2 2 2
# Counts at 8×8 (×4): class 0: I 12, T 16, P 12 -> U 16, IoU 3/4, Acc 3/4
#                     class 1: I 16, T 16, P 20 -> U 20, IoU 4/5, Acc 1
#                     class 2: I 24, T 24, P 24 -> U 24, IoU 1,   Acc 1
# mIoU = (0.75 + 0.8 + 1)/3 = 0.85; mAcc = 2.75/3; allAcc = 52/56 = 13/14
GT_GRID = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 2, 2]], dtype=np.uint8)
PRED_GRID = np.array([[1, 0, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0], [2, 2, 2, 2]], dtype=np.uint8)


def _save_palette(labels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels, mode="P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
    image.save(path)


def test_semantic_folders(tmp_path: Path) -> None:
    _save_palette(np.kron(GT_GRID, np.ones((2, 2), dtype=np.uint8)), tmp_path / "gt" / "s1.png")
    _save_grey(np.kron(PRED_GRID, np.ones((2, 2), dtype=np.uint8)), tmp_path / "pred" / "s1.png")

    result = evaluate_folders(
        tmp_path / "pred", tmp_path / "gt", num_classes=3, class_names=["bg", "cat", "dog"]
    )

    assert result["task"] == "semantic"
    assert result["num_images"] == 1
    metrics = result["metrics"]
    assert metrics["mIoU"] == pytest.approx(0.85)
    assert metrics["mAcc"] == pytest.approx(2.75 / 3)
    assert metrics["allAcc"] == pytest.approx(13 / 14)
    assert metrics["per_class"]["cat"] == pytest.approx({"IoU": 0.8, "Acc": 1.0})

    table = format_table(metrics)
    assert "mIoU    0.8500" in table
    assert "cat        0.8000  1.0000" in table


def test_semantic_out_of_range_label_names_the_file(tmp_path: Path) -> None:
    _save_palette(GT_GRID, tmp_path / "gt" / "s1.png")
    _save_grey(np.full((4, 4), 7, dtype=np.uint8), tmp_path / "pred" / "s1.png")
    with pytest.raises(ValueError, match=r"s1\.png.*predicted class id values \[7\]"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", num_classes=3)


def test_semantic_rgb_label_map_is_rejected(tmp_path: Path) -> None:
    _save_palette(GT_GRID, tmp_path / "gt" / "s1.png")
    (tmp_path / "pred").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "pred" / "s1.png")
    with pytest.raises(ValueError, match=r"s1\.png: label map has mode 'RGB'"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", num_classes=3)


# ---------------------------------------------------------------- binary scoring in worker processes
METRIC_KEYS = ("MAE", "maxFm", "meanFm", "adpFm", "Sm", "maxEm", "meanEm", "adpEm", "wFm", "maxFm_datasetPR")


def _pysodmetrics_loop(pred_dir: Path, gt_dir: Path) -> dict[str, float]:
    """The metrics segkd reports, from pysodmetrics' own classes stepped over the files in name order."""
    import warnings

    import py_sod_metrics as pysod

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fmeasure announces its successor FmeasureV2
        fm = pysod.Fmeasure()
    mae, sm, em, wfm = pysod.MAE(), pysod.Smeasure(), pysod.Emeasure(), pysod.WeightedFmeasure()
    for gt_path in sorted(gt_dir.iterdir()):
        pred = np.asarray(Image.open(next(pred_dir.glob(gt_path.stem + ".*"))).convert("L"))
        gt = np.asarray(Image.open(gt_path).convert("L"))
        for metric in (mae, fm, sm, em, wfm):
            metric.step(pred, gt)
    f_results, e_results = fm.get_results(), em.get_results()
    precision, recall = f_results["pr"]["p"], f_results["pr"]["r"]
    denominator = 0.3 * precision + recall
    dataset_pr_f = np.where(denominator > 0, 1.3 * precision * recall / np.where(denominator > 0, denominator, 1), 0)
    return {
        "MAE": mae.get_results()["mae"],
        "maxFm": f_results["fm"]["curve"].max(),
        "meanFm": f_results["fm"]["curve"].mean(),
        "adpFm": f_results["fm"]["adp"],
        "Sm": sm.get_results()["sm"],
        "maxEm": e_results["em"]["curve"].max(),
        "meanEm": e_results["em"]["curve"].mean(),
        "adpEm": e_results["em"]["adp"],
        "wFm": wfm.get_results()["wfm"],
        "maxFm_datasetPR": dataset_pr_f.max(),
    }


def _generated_folders(root: Path, resized_name: str | None = None) -> tuple[Path, Path]:
    """Eight mask/prediction pairs of several sizes, with an empty and a full mask and a flat map."""
    rng = np.random.default_rng(12)
    for index in range(8):
        height, width = 24 + 5 * index, 40 - 2 * index
        mask = np.zeros((height, width), dtype=np.uint8)
        if index == 0:
            mask[:] = 255  # all foreground
        elif index != 1:  # index 1: all background
            top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
            mask[top: top + height // 2, left: left + width // 3] = 255
        noise = rng.normal(0, 40 * (index % 3), mask.shape)
        pred = np.clip(mask * 0.7 + 30 + noise, 0, 255).astype(np.uint8)
        if index == 5:
            pred[:] = 90  # a flat map: pysodmetrics skips its min-max normalisation
        _save_grey(mask, root / "gt" / f"img{index}.png")
        if f"img{index}" == resized_name:
            pred = np.asarray(Image.fromarray(pred).resize((width // 2, height // 2)))
        _save_grey(pred, root / "pred" / f"img{index}.png")
    return root / "pred", root / "gt"


@pytest.mark.parametrize("source", ["pysod_fixtures", "generated"])
def test_binary_scores_equal_pysodmetrics_in_one_or_two_workers(source: str, shared_data: Path, tmp_path: Path) -> None:
    if source == "pysod_fixtures":
        fixtures = shared_data / "pysod_fixtures" / "test_data"
        pred_dir, gt_dir = fixtures / "preds", fixtures / "masks"
    else:
        pred_dir, gt_dir = _generated_folders(tmp_path)

    direct = _pysodmetrics_loop(pred_dir, gt_dir)
    one = evaluate_folders(pred_dir, gt_dir, workers=1)
    two = evaluate_folders(pred_dir, gt_dir, workers=2)

    assert set(one["metrics"]) == set(METRIC_KEYS)
    for key in METRIC_KEYS:
        assert abs(one["metrics"][key] - direct[key]) <= 1e-10, key
    # Shards merged in file order give the one-process numbers bit for bit.
    assert two == one


def test_binary_fixture_scores_match_the_library_reference(shared_data: Path) -> None:
    import json

    root = shared_data / "pysod_fixtures"
    reference = json.loads((root / "version_performance.json").read_text())["v1_4_3"]
    metrics = evaluate_folders(root / "test_data" / "preds", root / "test_data" / "masks", workers=2)["metrics"]
    for ours, theirs in {"MAE": "MAE", "Sm": "Smeasure", "wFm": "wFmeasure", "maxFm": "maxFm",
                         "adpEm": "adpEm", "meanEm": "meanEm", "maxEm": "maxEm"}.items():
        assert metrics[ours] == pytest.approx(reference[theirs], abs=1e-10), ours


def test_resized_maps_are_counted_over_all_workers(tmp_path: Path) -> None:
    pred_dir, gt_dir = _generated_folders(tmp_path, resized_name="img6")
    one = evaluate_folders(pred_dir, gt_dir, workers=1)
    two = evaluate_folders(pred_dir, gt_dir, workers=3)
    assert one["resized"] == two["resized"] == 1
    assert two == one


def test_unreadable_map_in_a_worker_is_named(tmp_path: Path) -> None:
    pred_dir, gt_dir = _generated_folders(tmp_path)
    (pred_dir / "img3.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"img3\.png: cannot read image"):
        evaluate_folders(pred_dir, gt_dir, workers=2)


def test_workers_must_be_positive(tmp_path: Path) -> None:
    pred_dir, gt_dir = _generated_folders(tmp_path)
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        evaluate_folders(pred_dir, gt_dir, workers=0)


def test_scoring_saved_maps_loads_no_torch(shared_data: Path) -> None:
    import subprocess
    import sys

    root = shared_data / "pysod_fixtures" / "test_data"
    heavy = ("torch", "torchvision", "timm", "matplotlib", "segkd.models", "segkd.engine")
    code = (
        "import sys\nfrom segkd.cli import main\n"
        f"code = main(['eval', '--pred', {str(root / 'preds')!r}, '--gt', {str(root / 'masks')!r}, '--workers', '2'])\n"
        f"print('loaded:', sorted(m for m in {heavy!r} if m in sys.modules), 'exit', code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert "loaded: [] exit 0" in done.stdout
    assert "wFm" in done.stdout


def test_cli_refuses_zero_workers(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from segkd.cli import main

    root = shared_data / "pysod_fixtures" / "test_data"
    assert main(["eval", "--pred", str(root / "preds"), "--gt", str(root / "masks"), "--workers", "0"]) == 2
    assert "--workers must be at least 1, got 0" in capsys.readouterr().err
