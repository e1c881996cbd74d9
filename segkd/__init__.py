"""segkd: knowledge distillation for image segmentation, in PyTorch.

The names below are the stable public API; everything else inside the package may move.

- ``Distiller``: distillation terms for any training loop (your forward, task loss and optimiser
  stay yours): ``terms = distiller(student(images), images, masks)``.
- ``build_model``, ``build_method``, ``build_dataset``: models, distillation methods and data
  sets by name and keyword arguments, without a config file.
- ``evaluate``: ``segkd eval``'s metrics for a model on a data set; ``load_trained``: a trained
  checkpoint's model and config; ``export_onnx``: the inference graph as ONNX.

Example:
    >>> import segkd
    >>> student = segkd.build_model("pspnet", backbone="resnet18", num_classes=4)
    >>> distiller = segkd.Distiller(student, teacher, methods=["logits_kd", {"name": "cwd", "temperature": 4.0}])

Names are imported on first use, so ``import segkd`` stays light.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from segkd.lazy import lazy_exports

if TYPE_CHECKING:
    from segkd.api import build_dataset, build_method, evaluate, export_onnx, load_trained
    from segkd.engine.distiller import Distiller
    from segkd.models.registry import build_model

_EXPORTS = {
    "Distiller": "engine.distiller",
    "build_model": "models.registry",
    "build_method": "api",
    "build_dataset": "api",
    "evaluate": "api",
    "load_trained": "api",
    "export_onnx": "api",
}
__all__ = ["Distiller", "build_dataset", "build_method", "build_model", "evaluate", "export_onnx", "load_trained"]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
