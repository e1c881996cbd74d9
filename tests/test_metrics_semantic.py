from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from segkd.metrics import SegmentationMetric

# Eight pixels, one of them ignored (255, predicted as 0: must not count anywhere).
#   target: 0 0 0 1 1 2 255 2
#   pred:   0 0 1 1 2 2   0 2
# Confusion (rows = target, cols = pred), class 3 never appears:
#        p0 p1 p2 p3
#   t0 [  2  1  0  0 ]  T0 = 3
#   t1 [  0  1  1  0 ]  T1 = 2
#   t2 [  0  0  2  0 ]  T2 = 2
#   t3 [  0  0  0  0 ]  T3 = 0
# I = (2, 1, 2, 0); P = column sums = (2, 2, 3, 0); U = T + P - I = (3, 3, 3, 0)
# IoU = (2/3, 1/3, 2/3, -) -> mIoU = 5/9 (class 3 has U = 0 and is left out)
# Acc = (2/3, 1/2, 1, -)   -> mAcc = (2/3 + 1/2 + 1) / 3 = 13/18
# allAcc = (2 + 1 + 2) / (3 + 2 + 2) = 5/7
TARGET = torch.tensor([[[0, 0, 0, 1], [1, 2, 255, 2]]])  # 1×2×4
PRED = torch.tensor([[[0, 0, 1, 1], [2, 2, 0, 2]]])
EXPECTED_CONFUSION = torch.tensor(
    [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 2, 0], [0, 0, 0, 0]], dtype=torch.int64
)


def test_hand_computed_confusion_and_scores() -> None:
    metric = SegmentationMetric(4, class_names=["bg", "cat", "dog", "bird"])
    metric.update(PRED, TARGET)
    assert torch.equal(metric.confusion, EXPECTED_CONFUSION)
    result = metric.compute()
    assert result["mIoU"] == pytest.approx(5 / 9)
    assert result["mAcc"] == pytest.approx(13 / 18)
    assert result["allAcc"] == pytest.approx(5 / 7)
    assert result["per_class"]["cat"] == pytest.approx({"IoU": 1 / 3, "Acc": 1 / 2})
    assert math.isnan(result["per_class"]["bird"]["IoU"])
    assert math.isnan(result["per_class"]["bird"]["Acc"])


def test_logits_give_the_same_result_as_ids() -> None:
    logits = F.one_hot(PRED, 4).permute(0, 3, 1, 2).float() * 5.0  # B×C×H×W
    from_logits = SegmentationMetric(4)
    from_logits.update(logits, TARGET)
    assert torch.equal(from_logits.confusion, EXPECTED_CONFUSION)


def test_class_predicted_but_absent_from_gt_counts_in_miou_not_macc() -> None:
    # target 0 0, pred 0 1 -> class 0: I 1, T 2, U 2 -> IoU 1/2, Acc 1/2;
    # class 1: I 0, T 0, U 1 -> IoU 0 (counted), Acc undefined (left out).
    metric = SegmentationMetric(2)
    metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
    result = metric.compute()
    assert result["mIoU"] == pytest.approx(0.25)
    assert result["mAcc"] == pytest.approx(0.5)
    assert result["allAcc"] == pytest.approx(0.5)


def test_merge_of_two_halves_equals_whole() -> None:
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (4, 6, 7), generator=generator)
    target[target == 4] = 255
    pred = torch.randint(0, 4, (4, 6, 7), generator=generator)

    whole = SegmentationMetric(4)
    whole.update(pred, target)
    first, second = SegmentationMetric(4), SegmentationMetric(4)
    first.update(pred[:2], target[:2])
    second.update(pred[2:], target[2:])
    first.merge(second)

    assert torch.equal(first.confusion, whole.confusion)
    assert first.compute() == whole.compute()
    assert int(whole.confusion.sum()) == int((target != 255).sum())


def test_reset_clears_counts() -> None:
    metric = SegmentationMetric(4)
    metric.update(PRED, TARGET)
    metric.reset()
    assert int(metric.confusion.sum()) == 0
    with pytest.raises(RuntimeError, match="no labelled pixels"):
        metric.compute()


def test_out_of_range_label_is_named() -> None:
    metric = SegmentationMetric(3)
    with pytest.raises(ValueError, match=r"target label values \[7, 9\]"):
        metric.update(torch.tensor([[0, 1, 2]]), torch.tensor([[7, 9, 255]]))


def test_out_of_range_prediction_is_named() -> None:
    metric = SegmentationMetric(3)
    with pytest.raises(ValueError, match=r"predicted class id values \[5\]"):
        metric.update(torch.tensor([[0, 5]]), torch.tensor([[0, 1]]))


def test_shape_mismatch_is_reported() -> None:
    metric = SegmentationMetric(3)
    with pytest.raises(ValueError, match=r"\(1, 2\).*\(1, 3\)"):
        metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1, 2]]))


def test_class_names_length_must_match() -> None:
    with pytest.raises(ValueError, match="class_names has 2 names but num_classes is 3"):
        SegmentationMetric(3, class_names=["a", "b"])
