"""``train.channels_last``: segkd's own networks give the same outputs in the channels-last memory format."""
from __future__ import annotations

import pytest
import torch

from segkd.models import build_model

NETWORKS = {
    "pspnet": {"backbone": "resnet18", "num_classes": 3, "output_stride": 8},
    "deeplabv3plus": {"backbone": "resnet18", "num_classes": 1, "aux": False},
    "fusion": {"backbone": "resnet18", "width": 8},
    "fusion-lite0": {"backbone": "efficientnet_lite0", "width": 8},
}


@pytest.mark.parametrize("name", NETWORKS)
def test_outputs_agree_in_the_channels_last_format(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name.split("-")[0], **NETWORKS[name]).eval()
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        default = model(image)
        model.to(memory_format=torch.channels_last)
        last = model(image.contiguous(memory_format=torch.channels_last))
    assert any(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in model.parameters() if p.dim() == 4)  # the conversion took place
    for key in default:
        assert torch.allclose(default[key], last[key], rtol=1e-4, atol=1e-5), key
