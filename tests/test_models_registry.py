"""The model registry, builder option checks, parameter counting."""
from __future__ import annotations

import pytest
from torch import nn

from segkd.models import MODELS, build_model, builder_options, count_parameters


def test_registered_builders() -> None:
    assert {"pspnet", "pspnet50", "pspnet18", "fusion"} <= set(MODELS.names())


def test_unknown_option_is_named() -> None:
    with pytest.raises(ValueError, match=r"model 'pspnet18' has no option\(s\) \['num_clases'\]"):
        build_model("pspnet18", num_clases=3)
    # A variant fixes its backbone, so the option is not offered.
    with pytest.raises(ValueError, match=r"\['backbone'\]"):
        build_model("pspnet50", backbone="resnet18")
    with pytest.raises(ValueError, match=r"'fusion' has no option\(s\) \['aux', 'num_classes'\]"):
        build_model("fusion", num_classes=1, aux=True)


def test_unknown_model_lists_available() -> None:
    with pytest.raises(KeyError, match="unknown model 'pspnet34'.*pspnet18"):
        build_model("pspnet34")


def test_variants_offer_the_options_of_pspnet_except_backbone() -> None:
    full = builder_options("pspnet")
    assert full["backbone"] == "resnet50" and full["bins"] == (1, 2, 3, 6)
    variant = builder_options("pspnet18")
    assert variant == {k: v for k, v in full.items() if k != "backbone"}
    assert builder_options("fusion") == {
        "backbone": "resnet50", "pretrained": None, "width": 64, "output_stride": 32,
    }


def test_count_parameters_by_hand() -> None:
    conv = nn.Conv2d(3, 4, kernel_size=1)  # 3·4 weights + 4 biases
    shared = nn.Linear(2, 2)  # 4 + 2, appears twice but is counted once
    frozen = nn.BatchNorm2d(5)  # 5 + 5
    frozen.requires_grad_(False)
    model = nn.Sequential(conv, shared, shared, frozen)
    assert count_parameters(model) == 16 + 6 + 10
    assert count_parameters(model, trainable_only=True) == 16 + 6
