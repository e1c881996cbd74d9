"""A plain pysodmetrics loop: the baseline that `sod_scoring.py` times `segkd eval` against.

Reads every mask of GT_DIR and the prediction of the same file name in PRED_DIR as grey images
(as pysodmetrics' own example does), steps MAE, Fmeasure, Smeasure, Emeasure and
WeightedFmeasure, and prints the metrics segkd reports as one JSON object.

    python benchmarks/pysod_loop.py PRED_DIR GT_DIR
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import py_sod_metrics as pysod


def main(pred_dir: Path, gt_dir: Path) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fmeasure announces its successor; its numbers are the classic ones
        fm = pysod.Fmeasure()
    mae, sm, em, wfm = pysod.MAE(), pysod.Smeasure(), pysod.Emeasure(), pysod.WeightedFmeasure()
    for gt_path in sorted(gt_dir.iterdir()):
        gt = cv2.imread(str(gt_path), cv2.IMREAD_GRAYSCALE)
        pred = cv2.imread(str(pred_dir / gt_path.name), cv2.IMREAD_GRAYSCALE)
        if gt is None or pred is None:
            raise SystemExit(f"cannot read {gt_path} or {pred_dir / gt_path.name}")
        for metric in (mae, fm, sm, em, wfm):
            metric.step(pred=pred, gt=gt)

    f_results, e_results = fm.get_results(), em.get_results()
    precision, recall = f_results["pr"]["p"], f_results["pr"]["r"]
    denominator = 0.3 * precision + recall
    dataset_pr_f = np.divide(1.3 * precision * recall, denominator, out=np.zeros_like(denominator),
                             where=denominator > 0)
    return {
        "MAE": float(mae.get_results()["mae"]),
        "maxFm": float(f_results["fm"]["curve"].max()),
        "meanFm": float(f_results["fm"]["curve"].mean()),
        "adpFm": float(f_results["fm"]["adp"]),
        "Sm": float(sm.get_results()["sm"]),
        "maxEm": float(e_results["em"]["curve"].max()),
        "meanEm": float(e_results["em"]["curve"].mean()),
        "adpEm": float(e_results["em"]["adp"]),
        "wFm": float(wfm.get_results()["wfm"]),
        "maxFm_datasetPR": float(dataset_pr_f.max()),
    }


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))))
