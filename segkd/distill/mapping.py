"""Mapping layers that bring a student's feature map onto the teacher's channel count."""
from __future__ import annotations

from collections.abc import Mapping

import torch

from segkd.distill.functional import check_choice, tap_channels

MAPPING_MODES = ("auto", "none", "conv_bn", "conv", "auto_conv")


def build_mapping(
    mode: str, in_channels: int, out_channels: int, method: str
) -> torch.nn.Module | None:
    """A regressor (1×1 conv, with or without BN) that maps student channels onto the teacher's.

    ``mode``: ``"auto"`` builds a 1×1 conv + BN only when the channel counts differ,
    ``"conv_bn"`` always; ``"auto_conv"`` / ``"conv"`` the same with a plain bias-free 1×1 conv
    (the mapping of the CIRKD benchmark code: CWD maps only when counts differ, FitNets always);
    ``"none"`` never (an error names ``method`` when the counts differ: nothing could compare
    them).
    """
    check_choice("mapping", mode, MAPPING_MODES)
    only_if_needed = mode in ("auto", "auto_conv")
    if mode == "none" or (only_if_needed and in_channels == out_channels):
        if in_channels != out_channels:
            raise ValueError(
                f"method '{method}': mapping='none' but the student has {in_channels} channels "
                f"and the teacher {out_channels}; use mapping='auto' or 'conv_bn'"
            )
        return None
    conv = torch.nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
    if mode in ("conv", "auto_conv"):
        return conv
    return torch.nn.Sequential(conv, torch.nn.BatchNorm2d(out_channels))


def pair_mapping(mode: str, student_shapes: Mapping[str, torch.Size], teacher_shapes: Mapping[str, torch.Size],
                 key: str, method: str) -> torch.nn.Module | None:
    """:func:`build_mapping` between the student's and the teacher's tapped tensor ``key``."""
    return build_mapping(
        mode,
        tap_channels(student_shapes, key, "student", method),
        tap_channels(teacher_shapes, key, "teacher", method),
        method,
    )


def mapped_pair(student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor], key: str,
                mapping: torch.nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(the student's ``key`` through ``mapping``, the teacher's ``key`` cut from the graph)."""
    source = student[key]
    return (mapping(source) if mapping is not None else source), teacher[key].detach()
