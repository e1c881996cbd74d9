"""Af-DCD: the omni-contrastive loss and the masked feature term against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from segkd.cli import main
from segkd.distill import build_method
from segkd.distill.afdcd import AfDCD, omni_contrastive_loss

TAPPED = AfDCD.tapped  # the key of Af-DCD's tap on both sides


def test_contrastive_loss_one_position_two_groups_by_hand() -> None:
    # student tokens (group 0, group 1) = (1, 0); teacher = (0.5, 2); tau 0.5.
    s = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    t = torch.tensor([0.5, 2.0]).reshape(1, 2, 1, 1)
    # group 0: positive -|1-0.5| = -0.5, negative (teacher group 1) -|1-2| = -1
    #   CE = log(1 + exp((-1 + 0.5) / 0.5)) = log(1 + e^-1)
    # group 1: positive -|0-2| = -2, negative -|0-0.5| = -0.5 -> CE = log(1 + e^3)
    expected = math.log(1 + math.exp(-1)) + math.log(1 + math.exp(3))
    loss = omni_contrastive_loss(s, t, groups=2, patch=1, tau=0.5)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(3.36185, abs=1e-5)


def _reference(s: torch.Tensor, t: torch.Tensor, groups: int, patch: int, tau: float) -> float:
    """The definition, one token at a time."""
    b, c, h, w = s.shape
    d, total, rows = c // groups, 0.0, 0
    for i in range(b):
        for y0 in range(0, h - h % patch, patch):
            for x0 in range(0, w - w % patch, patch):
                cells = [(y, x, m) for y in range(y0, y0 + patch) for x in range(x0, x0 + patch) for m in range(groups)]
                for (y, x, m) in cells:
                    anchor = s[i, m * d:(m + 1) * d, y, x]
                    def score(yy: int, xx: int, mm: int, anchor=anchor, i=i) -> float:
                        return -(anchor - t[i, mm * d:(mm + 1) * d, yy, xx]).abs().sum().item() / tau
                    logits = [score(y, x, m)] + [score(yy, xx, mm) for (yy, xx, mm) in cells if mm != m]
                    total += -logits[0] + math.log(sum(math.exp(v) for v in logits))
                    rows += 1
    return total / (rows / groups)


def test_contrastive_loss_matches_the_definition_over_patches_and_groups() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(2, 6, 5, 4), torch.randn(2, 6, 5, 4)  # 5 rows: the last is beyond whole patches
    loss = omni_contrastive_loss(s, t, groups=3, patch=2, tau=0.7)
    assert loss.item() == pytest.approx(_reference(s, t, 3, 2, 0.7), rel=1e-5)
    with pytest.raises(ValueError, match="smaller than one 8×8 patch"):
        omni_contrastive_loss(s, t, groups=3, patch=8, tau=0.7)


def _identity_projector(method: AfDCD, channels: int) -> None:
    with torch.no_grad():
        for conv in method.projector.modules():
            if isinstance(conv, nn.Conv2d):
                conv.weight.zero_()
                conv.bias.zero_()
                conv.weight[range(channels), range(channels), 1, 1] = 1.0


def test_feature_term_by_hand_with_identity_projector_and_masks() -> None:
    torch.manual_seed(0)
    method = build_method({"name": "afdcd", "projector": "plain", "mask_ratio": 0.0, "pool": 0,
                           "groups": 2, "patch": 1, "fd_weight": 1.0, "ctr_weight": 0.0})
    shapes = {TAPPED: torch.Size([2, 2, 3, 3])}
    method.setup(shapes, shapes)
    assert isinstance(method.align, nn.Identity)  # same channels: nothing to map
    _identity_projector(method, 2)
    s, t = torch.rand(2, 2, 3, 3), torch.randn(2, 2, 3, 3)  # s >= 0 passes the ReLU unchanged
    losses = method({TAPPED: s}, {TAPPED: t}, {})
    assert set(losses) == set(AfDCD.terms) == {"fd", "ctr"}
    assert losses["fd"].item() == pytest.approx(((s - t) ** 2).sum().item() / 2, rel=1e-6)
    method.mask_ratio = 1.0  # everything masked: the projector sees zeros and predicts zeros
    assert method({TAPPED: s}, {TAPPED: t}, {})["fd"].item() == pytest.approx((t**2).sum().item() / 2, rel=1e-6)


def test_defaults_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    method = build_method({"name": "afdcd"})
    assert method.student_taps == method.teacher_taps == {TAPPED: "stage4"}
    method.setup({TAPPED: torch.Size([2, 8, 16, 16])}, {TAPPED: torch.Size([2, 32, 16, 16])})
    assert method.align.weight.shape == (32, 8, 1, 1)
    s = torch.randn(2, 8, 16, 16, requires_grad=True)
    losses = method({TAPPED: s}, {TAPPED: torch.randn(2, 32, 16, 16)}, {})
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert method.projector.adapt2.weight.grad is not None
    with pytest.raises(ValueError, match="groups=5 must divide the teacher's 32 channels"):
        build_method({"name": "afdcd", "groups": 5}).setup({TAPPED: torch.Size([1, 8, 4, 4])},
                                                           {TAPPED: torch.Size([1, 32, 4, 4])})
    with pytest.raises(ValueError, match="0 <= mask_ratio <= 1"):
        build_method({"name": "afdcd", "mask_ratio": 1.5})


def test_methods_command_lists_afdcd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("afdcd"):].split("\n\n")[0]
    assert "Augmentation-free Dense Contrastive Knowledge Distillation" in block and "NeurIPS 2023" in block
    assert "'fd_weight': 2e-06" in block and "'ctr_weight': 0.005" in block and "'temperature': 0.07" in block
