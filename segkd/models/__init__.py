"""Segmentation networks, their backbones and weight loading.

Builders are registered in ``MODELS`` and built by name with :func:`build_model`; the builder
functions themselves live in their modules (``segkd.models.pspnet.pspnet18``…), whose names the
package does not shadow.

>>> model = build_model("pspnet18", num_classes=21)
>>> MODELS.names("pspnet*")
['pspnet', 'pspnet18', 'pspnet50']
"""
from segkd.models.backbones import create_backbone, stage_module_paths
from segkd.models.base import SegmentationModel, count_parameters
from segkd.models.deeplab import DeepLabV3
from segkd.models.fusion import FusionNet
from segkd.models.imported import ImportedModel
from segkd.models.pspnet import PSPNet, PyramidPooling
from segkd.models.registry import MODELS, build_model, builder_options, register_model
from segkd.models.torchvision_models import TorchvisionSegmentation
from segkd.models.weights import load_backbone_weights, read_state_dict, remap_by_order

__all__ = [
    "MODELS",
    "DeepLabV3",
    "FusionNet",
    "ImportedModel",
    "PSPNet",
    "PyramidPooling",
    "SegmentationModel",
    "TorchvisionSegmentation",
    "build_model",
    "builder_options",
    "count_parameters",
    "create_backbone",
    "load_backbone_weights",
    "read_state_dict",
    "register_model",
    "remap_by_order",
    "stage_module_paths",
]
