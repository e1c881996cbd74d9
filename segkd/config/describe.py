"""The config keys as a table (``segkd config show``): key, type, default or a config's value, help."""
from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from segkd.config.schema import Config, ModelConfig


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not getattr(annotation, "__args__", None) else None
    text = text or str(annotation)
    for noise in ("typing.", "pathlib.", "segkd.config.schema.", "segkd.data.config.", "NoneType"):
        text = text.replace(noise, "None" if noise == "NoneType" else "")
    return text


def _shown(info: Any, annotation: Any, values: dict[str, Any] | None, name: str) -> str:
    """The default column: the config's value when ``values`` are given, else the schema's default."""
    if values is not None and name not in values:
        return "(not used by this task)"
    if values is not None:
        return yaml.safe_dump(values[name], default_flow_style=True, width=1000).strip().removesuffix("...").strip()
    if info.is_required():
        return "(required)"
    if info.default_factory is not None:
        computed = annotation is not None and "BaseModel" in str(annotation)
        return "(computed)" if computed else repr(info.default_factory())
    return repr(info.default)


def describe_keys(model: type[BaseModel] = None, prefix: str = "",  # type: ignore[assignment]
                  values: dict[str, Any] | None = None) -> list[tuple[str, str, str, str]]:
    """``(key, type, default, help)`` for every config key, sections expanded (``train.epochs``).

    With ``values`` (a resolved config as a dict), the default column shows that config's value.
    """
    model = model or Config
    rows = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = info.annotation
        sub = values.get(name) if isinstance(values, dict) else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation is not ModelConfig:
            rows += describe_keys(annotation, key + ".", sub if isinstance(sub, dict) else None)
            continue
        help_text = info.description or ""
        if annotation is ModelConfig:
            help_text = "name: a registered model; every other key is an option of its builder"
        rows.append((key, _type_name(annotation), _shown(info, annotation, values, name), help_text))
    return rows
