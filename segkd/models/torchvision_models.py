"""torchvision's segmentation models by name, as segkd teachers or students, with local weights only.

The model keeps torchvision's own module names (``backbone``, ``classifier``, ``aux_classifier``),
so torchvision's published checkpoints (``deeplabv3_resnet50_coco-cd0a2569.pth``, …) and a
teacher trained elsewhere with torchvision load without renaming. Nothing is downloaded:
torchvision is always called with ``weights=None, weights_backbone=None``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision.models.segmentation as tv_seg
from torch import nn

from segkd.models.base import SegmentationModel, resize_to
from segkd.models.registry import register_model
from segkd.models.weights import describe_mismatch, read_state_dict

logger = logging.getLogger(__name__)

# The last conv of each classifier: its shape follows num_classes, so a checkpoint trained on
# another class count keeps everything but these.
_CLASS_LAYERS = ("classifier.4.", "aux_classifier.4.", "classifier.low_classifier.",
                 "classifier.high_classifier.")


class TorchvisionSegmentation(SegmentationModel):
    """A torchvision segmentation model under segkd's contract.

    ``forward(x)`` returns ``{"out": B×K×H×W}`` and, in training mode with an aux classifier,
    ``"aux"``. Feature points (ResNet backbones): ``stage1..stage4``; (MobileNetV3) ``low`` (the
    stride-8 block) and ``stage4`` (the last block); and ``head`` / ``logits`` of the classifier,
    ``aspp`` for DeepLabV3, ``aux_feat`` / ``aux`` with the aux classifier.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.classifier = model.classifier
        self.aux_classifier: nn.Module | None = getattr(model, "aux_classifier", None)
        self.lraspp = isinstance(model, tv_seg.LRASPP)
        names = [name for name, _ in self.backbone.named_children()]
        if "layer4" in names:
            points = {f"stage{i}": f"backbone.layer{i}" for i in range(1, 5)}
        else:  # MobileNetV3 features: torchvision taps block 4 (stride 8) and the last block
            points = {"low": "backbone.4", "stage4": f"backbone.{names[-1]}"}
        if self.lraspp:
            points.update(head="classifier.cbr", logits="classifier")
        elif isinstance(self.classifier, tv_seg.deeplabv3.DeepLabHead):
            points.update(aspp="classifier.0", head="classifier.3", logits="classifier.4")
        else:  # FCNHead
            points.update(head="classifier.2", logits="classifier.4")
        if self.aux_classifier is not None:
            points.update(aux_feat="aux_classifier.2", aux="aux_classifier.4")
        self.feature_points = points

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        # torchvision upsamples with align_corners=False; keep its numbers.
        if self.lraspp:
            return {"out": resize_to(self.classifier(features), size, False)}
        outputs = {"out": resize_to(self.classifier(features["out"]), size, False)}
        if self.training and self.aux_classifier is not None:
            outputs["aux"] = resize_to(self.aux_classifier(features["aux"]), size, False)
        return outputs


def load_segmentation_checkpoint(model: TorchvisionSegmentation, path: str | Path) -> None:
    """Load a whole torchvision segmentation checkpoint; class layers of another size are skipped.

    Raises:
        ValueError: anything but the class layers (and an aux classifier the model lacks) does
            not fit; the message names the file and the keys.
    """
    state = read_state_dict(path)
    target = model.state_dict()
    if model.aux_classifier is None:
        state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
    skipped = [k for k, v in state.items()
               if k.startswith(_CLASS_LAYERS) and k in target and v.shape != target[k].shape]
    state = {k: v for k, v in state.items() if k not in skipped}
    problems = describe_mismatch(state, {k: v for k, v in target.items() if k not in skipped})
    if problems:
        raise ValueError(f"weights file {path} does not fit this torchvision model: {problems}")
    if skipped:
        logger.warning("%s: class layers %s have another class count; they start from scratch",
                       path, skipped)
    model.load_state_dict(state, strict=False)


def load_classification_backbone(model: TorchvisionSegmentation, path: str | Path) -> None:
    """Load torchvision ImageNet classification weights (``resnet50-0676ba61.pth``,
    ``mobilenet_v3_large-8738ca79.pth``) into the backbone; the classifier's keys are dropped."""
    state = read_state_dict(path)
    # MobileNetV3's backbone is its ``features`` block: features.3.x -> 3.x
    state = {k.removeprefix("features."): v for k, v in state.items()}
    target = model.backbone.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier.", "avgpool."))}
    problems = describe_mismatch(state, target)
    if problems:
        raise ValueError(f"weights file {path} does not fit the backbone: {problems}")
    model.backbone.load_state_dict(state, strict=False)


def _register(name: str, factory: Callable[..., nn.Module], has_aux: bool) -> None:
    def builder(
        *,
        num_classes: int = 21,
        aux: bool = has_aux,
        pretrained: str | Path | None = None,
        pretrained_backbone: str | Path | None = None,
    ) -> TorchvisionSegmentation:
        if aux and not has_aux:
            raise ValueError(f"model '{name}' has no aux classifier; set aux: false")
        for key, value in (("pretrained", pretrained), ("pretrained_backbone", pretrained_backbone)):
            if value is not None and not Path(value).is_file():
                raise ValueError(
                    f"model '{name}': {key} must be a local weight file (torchvision's models are "
                    f"never downloaded here), got {value!r}"
                )
        kwargs = {"aux_loss": aux} if has_aux else {}
        tv_model = factory(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
        model = TorchvisionSegmentation(tv_model)
        if pretrained_backbone is not None:
            load_classification_backbone(model, pretrained_backbone)
        if pretrained is not None:
            load_segmentation_checkpoint(model, pretrained)
        return model

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (
        f"torchvision's ``{name}`` (no download). ``pretrained``: a local checkpoint of the whole "
        "segmentation model (class layers of another size are skipped); ``pretrained_backbone``: "
        "a local torchvision ImageNet classification file for the backbone."
    )
    register_model(name)(builder)


for _name, _has_aux in [
    ("deeplabv3_resnet50", True), ("deeplabv3_resnet101", True),
    ("deeplabv3_mobilenet_v3_large", True), ("fcn_resnet50", True), ("fcn_resnet101", True),
    ("lraspp_mobilenet_v3_large", False),
]:
    _register(_name, getattr(tv_seg, _name), _has_aux)
