"""Load local ImageNet weight files into a timm ``features_only`` backbone. Nothing is downloaded.

Accepted files:

- torchvision ResNets (``resnet50-19c8e357.pth``: ``conv1.weight``, ``bn1.*``,
  ``layer1.0.conv1.weight``, …, ``fc.*``) and timm files; timm's ResNets use torchvision's names;
- checkpoints wrapping either under ``"state_dict"`` or ``"model"``, with or without the
  ``module.`` prefix of ``DataParallel``; a whole segmentation model's checkpoint gives its
  ``backbone.*`` part;
- EfficientNet-Lite0 in the lukemelas naming (``efficientnet-lite0-57934424.pth``: ``_conv_stem``,
  ``_blocks.0._depthwise_conv``, …), whose tensors map one-to-one, in order and shape, onto timm's
  ``efficientnet_lite0``.

- timm's ``.safetensors`` files (what the Hugging Face hub serves);
- EfficientNet-Lite1 / Lite2 files of the same naming (``efficientnet-lite1-77cc7160.pth``,
  ``efficientnet-lite2-9656183e.pth``) map the same way onto ``efficientnet_lite1`` / ``_lite2``.

``pretrained: imagenet`` instead asks timm for its hub weights (:func:`require_hub_weights`): on
a machine without internet this fails at once, naming the file to fetch and pass instead.

Keys of the classifier that ``features_only`` dropped (``fc.*``, ``classifier.*``, ``conv_head.*``)
are ignored; anything else that does not fit is a ``ValueError`` naming the file and the keys.
"""
from __future__ import annotations

import logging
import os
import pickle
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from torch import nn

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

HUB_WEIGHTS = "imagenet"  # the ``pretrained`` value that asks timm's hub instead of a file
_WRAPPER_KEYS = ("state_dict", "model")
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
_SHOWN_KEYS = 4


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Copy the weights in ``path`` into ``backbone`` (in place).

    Args:
        backbone: a model from :func:`segkd.models.backbones.create_backbone` (any module works;
            timm ones also let the classifier keys of the file be recognised and skipped).
        path: a local ``.pth`` / ``.pt`` file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds no state dict, or its tensors do not fit the backbone; the
            message names the file and lists missing / unexpected keys and shape mismatches.
    """
    path = Path(path)
    state = read_state_dict(path)
    target = backbone.state_dict()
    template = _full_model_template(backbone) or target
    if _is_lukemelas_efficientnet(state):
        state = remap_by_order(state, template, source_name=f"weights file {path}")
    elif not set(state) & set(target) and any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}

    # Parts of the full network that features_only leaves out (classifier, final conv).
    left_out = set(template) - set(target)
    state = {k: v for k, v in state.items() if k not in left_out}

    problems = describe_mismatch(state, target)
    if problems:
        unexpected = [k for k in state if k not in target]
        raise ValueError(
            f"weights file {path} does not fit backbone '{_architecture(backbone)}': {problems}"
            + _deep_stem_hint(unexpected)
        )
    backbone.load_state_dict(state, strict=False)
    logger.info("loaded %d tensors from %s into '%s'", len(state), path, _architecture(backbone))


def read_state_dict(path: str | Path) -> StateDict:
    """Read ``{name: tensor}`` from a weight file or a checkpoint that wraps one.

    Wrappers under ``"state_dict"`` / ``"model"`` are opened, and a ``module.`` prefix on every
    key (``DataParallel``) is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # timm's dependency

            content: Any = load_file(path, device="cpu")
        else:
            content = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        raise ValueError(
            f"weights file {path} cannot be read as a PyTorch file: {error}"
        ) from error
    while isinstance(content, Mapping) and not _holds_tensors(content):
        wrapper = next((k for k in _WRAPPER_KEYS if k in content), None)
        if wrapper is None:
            raise ValueError(
                f"weights file {path} holds no state dict: top-level keys {sorted(content)[:8]}, "
                f"expected tensors or one of {list(_WRAPPER_KEYS)}"
            )
        content = content[wrapper]
    if not isinstance(content, Mapping):
        raise ValueError(f"weights file {path} holds a {type(content).__name__}, not a state dict")
    state = {str(k): v for k, v in content.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def remap_by_order(
    source: Mapping[str, torch.Tensor],
    template: Mapping[str, torch.Tensor],
    *,
    source_name: str = "source",
) -> StateDict:
    """Rename the tensors of ``source`` to the keys of ``template``, pairing them in order.

    For two implementations of one architecture that register the same layers in the same order
    under different names (lukemelas' EfficientNet and timm's). ``num_batches_tracked`` buffers
    are left out on both sides. Every pair must agree in shape.

    Returns:
        ``{template_key: source_tensor}``.

    Raises:
        ValueError: the tensor counts differ, or a pair's shapes differ (the first such pair is
            named).
    """
    source_keys = [k for k in source if not k.endswith("num_batches_tracked")]
    target_keys = [k for k in template if not k.endswith("num_batches_tracked")]
    if len(source_keys) != len(target_keys):
        raise ValueError(
            f"{source_name} has {len(source_keys)} tensors but the model has {len(target_keys)}; "
            "they cannot be paired in order"
        )
    remapped: StateDict = {}
    for index, (src, dst) in enumerate(zip(source_keys, target_keys)):
        if source[src].shape != template[dst].shape:
            raise ValueError(
                f"{source_name}: tensor #{index} '{src}' {tuple(source[src].shape)} does not match "
                f"the model's '{dst}' {tuple(template[dst].shape)}"
            )
        remapped[dst] = source[src]
    return remapped


def require_hub_weights(name: str, *, timeout: float = 3.0) -> None:
    """Make sure timm can get the ImageNet weights of ``name`` now, or fail at once saying how.

    The weights are there when they sit in the Hugging Face cache; otherwise the hub must be
    reachable: ``HF_HUB_OFFLINE`` set, or no connection to the host within ``timeout`` seconds,
    is an error (rather than a download that hangs) naming the file to fetch on a machine with
    internet and pass as a local ``pretrained`` file.

    Raises:
        ValueError: timm has no weights for ``name``, or they cannot be fetched from here.
    """
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None)
    url = getattr(cfg, "url", None)
    if cfg is None or not (hub_id or url):
        raise ValueError(f"model.pretrained: timm has no ImageNet weights for backbone '{name}'; "
                         "give a local weight file instead")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        if any(isinstance(try_to_load_from_cache(hub_id, f), str) for f in _HUB_FILES):
            return
    files = [f"https://huggingface.co/{hub_id}/resolve/main/model.safetensors"] if hub_id else []
    files += [url] if url else []
    advice = (
        f"on a machine with internet, download {' or '.join(files)} and set model.pretrained "
        "to that local file (or run once with internet so the hub cache holds it)"
    )
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ValueError(f"model.pretrained: imagenet needs the internet but HF_HUB_OFFLINE is set; {advice}")
    host = "huggingface.co" if hub_id else (urlparse(url).hostname or "")
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as error:
        raise ValueError(
            f"model.pretrained: imagenet needs the internet, and {host} cannot be reached "
            f"({error}); {advice}"
        ) from error


def _holds_tensors(mapping: Mapping[Any, Any]) -> bool:
    return any(isinstance(v, torch.Tensor) for v in mapping.values())


def _is_lukemelas_efficientnet(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(("_conv_stem.", "_blocks.")) for k in state)


def _architecture(backbone: nn.Module) -> str:
    config = getattr(backbone, "pretrained_cfg", None) or {}
    return str(config.get("architecture", type(backbone).__name__))


def _full_model_template(backbone: nn.Module) -> StateDict | None:
    """The state dict (shapes only) of the whole timm network the backbone was cut from."""
    config = getattr(backbone, "pretrained_cfg", None) or {}
    architecture = config.get("architecture")
    if architecture is None or not timm.is_model(architecture):
        return None
    # On the meta device no memory is allocated and no weights are initialised.
    with torch.device("meta"):
        full = timm.create_model(architecture, pretrained=False)
    return full.state_dict()


def describe_mismatch(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> str:
    """What keeps ``state`` from loading into a module whose state dict is ``target``.

    Returns "" when it fits; otherwise the counts and first few names of missing keys,
    unexpected keys and shape mismatches. Old torchvision files predate BatchNorm's
    ``num_batches_tracked`` buffer, so its absence is not counted.
    """
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        for k in state
        if k in target and state[k].shape != target[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return ""
    return "; ".join([
        _summarise("missing key(s)", missing),
        _summarise("unexpected key(s)", unexpected),
        _summarise("shape mismatch(es)", mismatched),
    ])


def _summarise(what: str, items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN_KEYS])
    more = f", … ({len(items) - _SHOWN_KEYS} more)" if len(items) > _SHOWN_KEYS else ""
    return f"{len(items)} {what}" + (f" [{shown}{more}]" if items else "")


def _deep_stem_hint(unexpected: list[str]) -> str:
    if {"conv2.weight", "conv3.weight"} <= set(unexpected):
        return (
            " (the file looks like a deep-stem ResNet, e.g. semseg's; only 7×7-stem weights such "
            "as torchvision's or timm's fit)"
        )
    return ""
