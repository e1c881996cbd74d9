"""ONNX and TorchScript export: graphs match eager PyTorch, files are written atomically."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segkd.commands.export import MatrixAdaptiveAvgPool2d, export_onnx, export_torchscript
from segkd.models import build_model


class TinySegNet(nn.Module):
    """Stand-in for a segkd network: strided conv + BN, a 3×3 pyramid-pooling branch, upsampling."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.classifier = nn.Conv2d(8, num_classes, 1)
        # Statistics unlike a fresh layer, so eval and train mode really differ.
        self.stem[1].running_mean.fill_(0.3)
        self.stem[1].running_var.fill_(2.0)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.stem(x)
        pooled = F.interpolate(self.pool(features), size=features.shape[-2:], mode="bilinear", align_corners=True)
        logits = self.classifier(features + pooled)
        outputs = {"out": F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)}
        if self.training:
            outputs["aux"] = outputs["out"] * 0.5
        return outputs


class BakedSizeNet(TinySegNet):
    """Upsamples to Python ints taken from the shape: a trace freezes them at the traced size."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.classifier(self.stem(x))
        size = (int(x.shape[2]), int(x.shape[3]))
        return {"out": F.interpolate(logits, size=size, mode="bilinear", align_corners=False)}


class NoisyNet(TinySegNet):
    """Adds fresh noise each call, so no exported graph can reproduce the eager output."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = super().forward(x)["out"]
        return {"out": out + torch.rand_like(out)}


class TensorOutputNet(TinySegNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)["out"]


def _eager(model: nn.Module, image: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.inference_mode():
        return model(image)["out"].numpy()


def test_onnx_matches_pytorch_at_other_batch_and_size(tmp_path: Path) -> None:
    model = TinySegNet().train()
    target = tmp_path / "tiny.onnx"
    result = export_onnx(model, target, input_size=(32, 48))
    assert model.training, "export must not switch the caller's model to eval mode"
    assert result["max_abs_diff"] <= 1e-4
    assert result["checked_shapes"] == [[1, 3, 32, 48], [2, 3, 64, 112]]
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.onnx"], "temporary file left behind"

    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    (graph_input,), (graph_output,) = session.get_inputs(), session.get_outputs()
    assert graph_input.name == "image" and graph_output.name == "out"
    assert [isinstance(d, str) for d in graph_input.shape] == [True, False, True, True]
    # 27×41 features at stride 2 are not divisible by the 3 pooling bins.
    image = torch.randn(3, 3, 53, 81)
    (onnx_out,) = session.run(["out"], {"image": image.numpy()})
    assert onnx_out.shape == (3, 3, 53, 81)
    np.testing.assert_allclose(onnx_out, _eager(model, image), atol=1e-4, rtol=0)


def test_onnx_static_export_has_fixed_input(tmp_path: Path) -> None:
    result = export_onnx(TinySegNet(), tmp_path / "static.onnx", input_size=(24, 40), dynamic=False)
    assert result["checked_shapes"] == [[1, 3, 24, 40]]
    session = onnxruntime.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 24, 40]
    assert session.get_outputs()[0].shape == [1, 3, 24, 40]


@pytest.mark.parametrize("bins", [1, 2, 3, 6, (2, 5)])
@pytest.mark.parametrize("size", [(7, 13), (8, 8), (5, 3)])
def test_matrix_pooling_equals_adaptive_pooling(bins: int | tuple[int, int], size: tuple[int, int]) -> None:
    x = torch.randn(2, 4, *size)
    output_size = (bins, bins) if isinstance(bins, int) else bins
    expected = F.adaptive_avg_pool2d(x, output_size)
    torch.testing.assert_close(MatrixAdaptiveAvgPool2d(output_size)(x), expected, atol=1e-6, rtol=1e-6)


def test_failed_check_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "noisy.onnx"
    with pytest.raises(RuntimeError, match="noisy.onnx: ONNX output differs from PyTorch"):
        export_onnx(NoisyNet(), target, input_size=(16, 16))
    assert list(tmp_path.iterdir()) == []


def test_existing_file_survives_a_failed_export(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        export_onnx(NoisyNet(), target, input_size=(16, 16))
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_rejects_a_checkpoint_dict(tmp_path: Path) -> None:
    state = TinySegNet().state_dict()
    with pytest.raises(TypeError, match="export needs an nn.Module, got OrderedDict"):
        export_onnx(state, tmp_path / "x.onnx", input_size=(16, 16))  # type: ignore[arg-type]


def test_rejects_output_without_out(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dict with an 'out' tensor.*got Tensor"):
        export_torchscript(TensorOutputNet(), tmp_path / "x.pt", input_size=(16, 16))


def test_rejects_non_finite_statistics(tmp_path: Path) -> None:
    model = TinySegNet()
    model.stem[1].running_var[2] = float("nan")
    with pytest.raises(ValueError, match="'stem.1.running_var' holds NaN"):
        export_onnx(model, tmp_path / "x.onnx", input_size=(16, 16))


def test_rejects_norm_without_running_stats(tmp_path: Path) -> None:
    model = TinySegNet()
    model.stem[1] = nn.BatchNorm2d(8, track_running_stats=False)
    with pytest.raises(ValueError, match="'stem.1' keeps no running statistics"):
        export_onnx(model, tmp_path / "x.onnx", input_size=(16, 16))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_trace_matches_at_another_size(tmp_path: Path) -> None:
    model = TinySegNet()
    target = tmp_path / "tiny.pt"
    result = export_torchscript(model, target, input_size=(32, 32))
    assert result["dynamic_spatial"] is True
    assert result["checked_shape"] == [2, 3, 64, 96]
    assert result["max_abs_diff"] <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.pt"]
    loaded = torch.jit.load(str(target))
    image = torch.randn(1, 3, 40, 24)
    with torch.inference_mode():
        traced_out = loaded(image)
    assert isinstance(traced_out, torch.Tensor)
    np.testing.assert_allclose(traced_out.numpy(), _eager(model, image), atol=1e-4, rtol=0)


def test_torchscript_with_baked_size_is_checked_at_traced_size(tmp_path: Path) -> None:
    result = export_torchscript(BakedSizeNet(), tmp_path / "baked.pt", input_size=(16, 24))
    assert result["dynamic_spatial"] is False
    assert result["checked_shape"] == [1, 3, 16, 24]
    assert result["max_abs_diff"] <= 1e-4


@pytest.mark.parametrize(
    ("name", "options", "channels"),
    [
        ("pspnet", {"backbone": "resnet18", "num_classes": 3, "aux": True}, 3),
        ("fusion", {"backbone": "resnet18"}, 1),
    ],
)
def test_real_models_export(tmp_path: Path, name: str, options: dict, channels: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, **options)
    onnx_result = export_onnx(model, tmp_path / f"{name}.onnx", input_size=(32, 32))
    assert onnx_result["max_abs_diff"] <= 1e-4
    script_result = export_torchscript(model, tmp_path / f"{name}.pt", input_size=(32, 32))
    assert script_result["dynamic_spatial"] is True
    session = onnxruntime.InferenceSession(onnx_result["path"], providers=["CPUExecutionProvider"])
    (out,) = session.run(["out"], {"image": np.zeros((1, 3, 72, 40), dtype=np.float32)})
    assert out.shape == (1, channels, 72, 40)
