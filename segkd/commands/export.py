"""Export a segmentation network for deployment: ONNX and TorchScript, each checked against eager.

Both formats hold the inference model only: one input ``image`` (B×3×H×W, normalised as in
training) and one output ``out``, the logits B×C×H×W at input resolution. Binary models export
their single-channel logits too (C = 1); the consumer applies the sigmoid (semantic: the argmax or
softmax), exactly as segkd's own prediction code does.

ONNX goes through PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``).
With torch 2.14 the ``torch.export``-based exporter works too but is ten or more times slower on
these networks (2 s against 25 s for PSPNet-18 on a CPU), has no opset-17 implementations of its
own (it converts down from 18), and, given a dynamic height and width, bakes adaptive average
pooling in at the example size without an error, where the TorchScript-based one refuses it.
Every ``nn.AdaptiveAvgPool2d`` of the exported copy is swapped for an exact pooling-matrix form
(:class:`MatrixAdaptiveAvgPool2d`), so PSPNet's pyramid pooling keeps dynamic spatial axes, and
the export is verified with onnxruntime at a second batch size and image size.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segkd.io import atomic_output

_SECOND_SIZE_STEP = (32, 64)  # added to (H, W) for the dynamic check: another size and aspect ratio
_SEED = 0


class MatrixAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` written as ``P_h · x · P_wᵀ`` so exporters keep H and W symbolic.

    Row ``i`` of ``P_h`` (out_h × H) averages input rows ``⌊i·H/out_h⌋ .. ⌈(i+1)·H/out_h⌉ − 1``,
    the same bins PyTorch uses, so the result equals adaptive pooling for every input size.
    """

    def __init__(self, output_size: tuple[int, int]) -> None:
        super().__init__()
        self.output_size = output_size

    @staticmethod
    def _pooling_matrix(size: int, bins: int, like: torch.Tensor) -> torch.Tensor:
        """bins×size matrix whose rows average the input positions of each bin."""
        positions = torch.arange(size, device=like.device)
        bin_index = torch.arange(bins, device=like.device)
        start = torch.div(bin_index * size, bins, rounding_mode="floor")
        end = torch.div((bin_index + 1) * size + bins - 1, bins, rounding_mode="floor")
        inside = (positions[None, :] >= start[:, None]) & (positions[None, :] < end[:, None])
        weights = inside.to(like.dtype)
        return weights / weights.sum(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W → B×C×out_h×out_w."""
        rows = self._pooling_matrix(x.shape[-2], self.output_size[0], x)
        cols = self._pooling_matrix(x.shape[-1], self.output_size[1], x)
        return rows @ x @ cols.transpose(0, 1)


class _LogitsOnly(nn.Module):
    """Exposes ``model(image)["out"]`` as a plain tensor-to-tensor module for exporters."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)["out"]


def _replace_adaptive_pools(model: nn.Module) -> None:
    """Swap every ``nn.AdaptiveAvgPool2d`` with a fixed, non-global output size in place."""
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.AdaptiveAvgPool2d):
            continue
        size = module.output_size
        out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
        if out_h is None or out_w is None or (out_h, out_w) == (1, 1):
            continue  # None keeps the input size; 1×1 exports as GlobalAveragePool already
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, MatrixAdaptiveAvgPool2d((int(out_h), int(out_w))))


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence tracing chatter that the checks in this module make redundant.

    Tracer warnings flag Python-level shape logic that *might* not generalise; the comparison
    at a second input size is what shows whether it does. The deprecation notices of
    ``torch.jit`` and of the TorchScript-based ONNX exporter concern formats chosen on purpose.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", r".*torch\.jit\.\w+` is deprecated", FutureWarning)
        warnings.filterwarnings("ignore", ".*legacy TorchScript-based ONNX", DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        yield


class ExportSizeError(ValueError):
    """An example input size the model cannot be exported at; the message says why and what to give."""


def _check_input_size(input_size: tuple[int, int]) -> tuple[int, int]:
    if len(input_size) != 2 or any(int(s) < 1 for s in input_size):
        raise ExportSizeError(f"input_size must be (height, width) of positive ints, got {input_size!r}")
    return int(input_size[0]), int(input_size[1])


def _example(batch: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *size, generator=generator)


def prepare_for_export(model: nn.Module, input_size: tuple[int, int]) -> nn.Module:
    """An eval-mode, float32, CPU copy of ``model`` wrapped to return only its logits.

    The caller's model is left untouched. Raises a clear error when ``model`` is not a module
    (e.g. a checkpoint dict), holds non-finite weights or statistics, has normalisation layers
    without running statistics (whose eval output would depend on the batch), or does not return
    ``{"out": B×C×H×W}`` at input resolution.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"export needs an nn.Module, got {type(model).__name__}; a checkpoint or state dict "
            "must first be loaded into a model built with the same architecture"
        )
    size = _check_input_size(input_size)
    copied = copy.deepcopy(model).cpu().float().eval()
    for name, tensor in [*copied.named_parameters(), *copied.named_buffers()]:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"model tensor '{name}' holds NaN or infinite values; cannot export")
    for name, module in copied.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.running_mean is None:
            raise ValueError(
                f"normalisation layer '{name}' keeps no running statistics, so its eval-mode "
                "output depends on the batch; export needs a model with running statistics"
            )
    with torch.inference_mode():
        try:
            outputs = copied(_example(1, size, _SEED))
        except RuntimeError as err:  # e.g. a kernel larger than the feature map it meets
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ExportSizeError(f"{type(model).__name__} cannot run on a {size[0]}×{size[1]} input ({reason}); "
                                  "give a larger size") from err
    if not isinstance(outputs, Mapping) or not isinstance(outputs.get("out"), torch.Tensor):
        found = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
        raise ValueError(f"model output must be a dict with an 'out' tensor in eval mode, got {found}")
    logits = outputs["out"]
    if logits.ndim != 4 or tuple(logits.shape[-2:]) != size:
        raise ValueError(
            f"model 'out' must be B×C×H×W logits at the input size {size}, "
            f"got shape {tuple(logits.shape)}"
        )
    return _LogitsOnly(copied).eval()


def _check_sizes(input_size: tuple[int, int], dynamic: bool) -> list[tuple[int, int, int, int]]:
    """Input shapes to compare on: the export shape, plus another batch and size when dynamic."""
    height, width = input_size
    shapes = [(1, 3, height, width)]
    if dynamic:
        shapes.append((2, 3, height + _SECOND_SIZE_STEP[0], width + _SECOND_SIZE_STEP[1]))
    return shapes


def _compare_onnx(path: Path, reference: nn.Module, shapes: list[tuple[int, int, int, int]]) -> float:
    """Largest |onnxruntime − eager| over random inputs of each shape."""
    import onnx
    import onnxruntime

    onnx.checker.check_model(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for index, shape in enumerate(shapes):
        image = _example(shape[0], shape[2:], _SEED + 1 + index)
        with torch.inference_mode():
            expected = reference(image).numpy()
        try:
            (actual,) = session.run(["out"], {"image": image.numpy()})
        except Exception as err:  # onnxruntime's own error types; the traced size (index 0) is a bug
            if index == 0:
                raise
            traced = "×".join(map(str, shapes[0][2:]))
            raise ExportSizeError(  # onnxruntime's own words name C++ internals: kept as the cause (--debug)
                f"the ONNX graph traced at {traced} fails in ONNX Runtime at {shape[2]}×{shape[3]}: at {traced} the "
                "model takes shape-dependent shortcuts that tracing bakes in (a feature map of one pixel, or as "
                "large as a pooling grid); export at another size, such as the training crop, or with fixed input "
                "sizes (segkd export --static)") from err
        if actual.shape != expected.shape:
            raise RuntimeError(
                f"{path.name}: ONNX output shape {actual.shape} != PyTorch {expected.shape} "
                f"for input {shape}"
            )
        worst = max(worst, float(np.abs(actual - expected).max()))
    return worst


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    input_size: tuple[int, int],
    opset: int = 17,
    dynamic: bool = True,
    check: bool = True,
    tolerance: float = 1e-4,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write the inference graph of ``model`` to ``path`` as ONNX.

    Args:
        model: a segkd network (``forward(x) -> {"out": B×C×H×W logits}``); copied, not modified.
        path: the ``.onnx`` file, written atomically.
        input_size: (H, W) of the example input; the only size when ``dynamic`` is False.
        opset: ONNX operator set version.
        dynamic: symbolic batch, height and width axes; otherwise a fixed 1×3×H×W input.
        check: run onnxruntime (CPU) on random inputs (1×3×H×W and, when dynamic,
            2×3×(H+32)×(W+64)) and compare with PyTorch; raise ``RuntimeError`` when the largest difference exceeds
            ``tolerance``. The target file is only written when the check passes.
        metadata: key/value strings stored in the model's ``metadata_props`` (see
            :func:`onnx_metadata`: input normalisation, what the output means, class names).

    Returns:
        ``path``, ``opset``, ``dynamic``, ``input_size``, ``checked_shapes``,
        ``max_abs_diff`` (None without ``check``) and ``file_bytes``.
    """
    path = Path(path)
    size = _check_input_size(input_size)
    reference = prepare_for_export(model, size)
    # The check compares against the untouched copy, so it also verifies the pooling swap.
    exported = copy.deepcopy(reference)
    _replace_adaptive_pools(exported)
    shapes = _check_sizes(size, dynamic)
    diff: float | None = None
    with atomic_output(path) as tmp:
        try:
            _run_onnx_exporter(exported, tmp, size, opset, dynamic)
        except Exception as err:
            raise RuntimeError(f"ONNX export of {type(model).__name__} to {path} failed: {err}") from err
        _fix_output_channels(tmp, reference, size)
        if metadata:
            _add_metadata(tmp, metadata)
        if check:
            diff = _check_against_pytorch(tmp, reference, shapes, tolerance, path)
        file_bytes = tmp.stat().st_size
    return {
        "path": str(path),
        "opset": opset,
        "dynamic": dynamic,
        "input_size": list(size),
        "checked_shapes": [list(s) for s in shapes] if check else [],
        "max_abs_diff": diff,
        "file_bytes": file_bytes,
    }


def _check_against_pytorch(onnx_file: Path, reference: nn.Module, shapes: list[tuple[int, int, int, int]],
                           tolerance: float, target: Path) -> float:
    """The largest |ONNX − PyTorch| over ``shapes``; a ``RuntimeError`` naming ``target`` above ``tolerance``."""
    diff = _compare_onnx(onnx_file, reference, shapes)
    if diff > tolerance:
        raise RuntimeError(f"{target}: ONNX output differs from PyTorch by up to {diff:.3g} (> {tolerance:g})")
    return diff


def _run_onnx_exporter(
    wrapped: nn.Module, target: Path, size: tuple[int, int], opset: int, dynamic: bool
) -> None:
    axes = {0: "batch", 2: "height", 3: "width"}
    with _quiet_tracing():
        torch.onnx.export(
            wrapped,
            (_example(1, size, _SEED),),
            str(target),
            dynamo=False,
            input_names=["image"],
            output_names=["out"],
            opset_version=opset,
            dynamic_axes={"image": axes, "out": axes} if dynamic else None,
        )


def _fix_output_channels(path: Path, reference: nn.Module, size: tuple[int, int]) -> None:
    """Write the class count into the output's axis 1, which tracing leaves as a generated symbol
    (``Resizeout_dim_1``): the output reads ``[batch, C, height, width]``."""
    import onnx

    with torch.inference_mode():
        channels = int(reference(_example(1, size, _SEED)).shape[1])
    proto = onnx.load(str(path))
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    if len(dims) == 4 and not dims[1].HasField("dim_value"):
        dims[1].dim_value = channels
        onnx.save(proto, str(path))


def _add_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    """Store ``metadata`` as the model's ``metadata_props`` (read by onnxruntime's
    ``get_modelmeta().custom_metadata_map``)."""
    import onnx

    proto = onnx.load(str(path))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    proto.doc_string = metadata.get("output", proto.doc_string)
    onnx.save(proto, str(path))


def onnx_metadata(cfg: Any) -> dict[str, str]:
    """What a consumer of the exported file needs to know, from a run's config: the task, the
    input normalisation and what ``out`` holds (and the class names of a semantic model)."""
    mean, std = cfg.data.normalization(cfg.task)
    meta = {
        "segkd.task": cfg.task,
        "input": "image: float32 B×3×H×W, RGB; (pixel value 0-255 − mean) / std per channel",
        "input.mean_rgb_0_255": ",".join(f"{v:g}" for v in mean),
        "input.std_rgb_0_255": ",".join(f"{v:g}" for v in std),
    }
    if cfg.task == "binary":
        meta["input.size"] = f"{cfg.data.test_size}x{cfg.data.test_size} (resize, the test protocol)"
        meta["output"] = "out: float32 B×1×H×W logits; foreground probability = sigmoid(out)"
    else:
        meta["output"] = (f"out: float32 B×{cfg.data.num_classes}×H×W logits; class id = argmax over axis 1 "
                          f"(softmax for probabilities)")
        meta["class_names"] = ",".join(cfg.data.class_names or [])
    return meta


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    *,
    input_size: tuple[int, int],
    check: bool = True,
    tolerance: float = 1e-4,
) -> dict[str, Any]:
    """Trace ``model`` (logits only, ``image`` B×3×H×W → ``out`` B×C×H×W) and save it to ``path``.

    With ``check``, the saved file is loaded back and compared with eager PyTorch on a second
    input (2×3×(H+32)×(W+64)). When the traced graph cannot run at that size (shapes baked in
    while tracing) the comparison falls back to the traced size and ``dynamic_spatial`` is False.
    Raises ``RuntimeError`` when the difference exceeds ``tolerance``; the file is only written
    when the check passes.

    TorchScript is deprecated upstream in favour of ``torch.export``; ONNX is the format to prefer
    for deployment, TorchScript serves C++/LibTorch consumers that still load it.

    Returns:
        ``path``, ``input_size``, ``dynamic_spatial`` (None without ``check``), ``checked_shape``,
        ``max_abs_diff`` and ``file_bytes``.
    """
    path = Path(path)
    size = _check_input_size(input_size)
    wrapped = prepare_for_export(model, size)
    diff: float | None = None
    dynamic_spatial: bool | None = None
    checked: list[int] = []
    with _quiet_tracing(), atomic_output(path) as tmp:
        with torch.no_grad():
            traced = torch.jit.trace(wrapped, _example(1, size, _SEED), check_trace=False)
        torch.jit.save(traced, str(tmp))
        if check:
            loaded = torch.jit.load(str(tmp), map_location="cpu")
            traced_shape, second_shape = _check_sizes(size, dynamic=True)
            diff = _max_traced_diff(loaded, wrapped, second_shape)
            dynamic_spatial = diff is not None and diff <= tolerance
            checked = list(second_shape)
            if not dynamic_spatial:
                diff = _max_traced_diff(loaded, wrapped, traced_shape)
                checked = list(traced_shape)
            if diff is None or diff > tolerance:
                raise RuntimeError(
                    f"{path}: traced model differs from PyTorch by up to {diff} (> {tolerance:g}) "
                    f"at input {traced_shape}"
                )
        file_bytes = tmp.stat().st_size
    return {
        "path": str(path),
        "input_size": list(size),
        "dynamic_spatial": dynamic_spatial,
        "checked_shape": checked,
        "max_abs_diff": diff,
        "file_bytes": file_bytes,
    }


def _max_traced_diff(
    traced: torch.jit.ScriptModule, eager: nn.Module, shape: tuple[int, ...]
) -> float | None:
    """Largest |traced − eager| on one random input; None when the traced graph fails or mis-shapes."""
    image = _example(shape[0], shape[2:], _SEED + 1)
    with torch.inference_mode():
        expected = eager(image)
        try:
            actual = traced(image)
        except RuntimeError:
            return None
    if actual.shape != expected.shape:
        return None
    return float((actual - expected).abs().max())
