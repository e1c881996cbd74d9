"""Checks of a run config against the registries, before a run spends its time.

The config schema (``segkd.config``) sits below the models and methods, so whether ``model.name`` is a
registered model taking the options given, and ``distill.methods`` registered methods that build with
theirs (with a teacher when they need one), is checked here, by the commands that load a run:
``load_run_config`` and ``validate_run`` give the same one-line errors as the schema's, each blamed on
its key or ``--set`` argument.
"""
from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any

from segkd.config import Config, load_config, validate
from segkd.distill import build_method
from segkd.models import MODELS


def model_problems(cfg: Config) -> list[tuple[str, str]]:
    """``(key, message)`` when ``model`` or ``distill.teacher.model`` names no registered model, an
    unknown option or backbone."""
    models = [("model", cfg.model)]
    if cfg.distill.teacher is not None:
        models.append(("distill.teacher.model", cfg.distill.teacher.model))
    return [(key, message) for key, model in models for message in _model_spec_problems(model.name, model.kwargs)]


def _model_spec_problems(name: str, options: dict[str, Any]) -> list[str]:
    try:
        builder = MODELS.get(name)
    except KeyError as err:  # the message lists the registered names
        return [err.args[0]]
    backbone = options.get("backbone")
    if isinstance(backbone, str):
        import timm

        if not timm.is_model(backbone):
            close = difflib.get_close_matches(backbone, timm.list_models(), n=5)
            return [f"unknown backbone '{backbone}' (a timm model name); close names: {close}"]
    params = inspect.signature(builder).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return []
    unknown = sorted(set(options) - set(params))
    if unknown:
        return [f"model '{name}' has no option(s) {unknown}; its options are {sorted(params)}"]
    return []


def method_problems(cfg: Config) -> list[tuple[str, str]]:
    """``("distill", message)`` for each method that does not build from its entry or lacks its teacher."""
    problems = []
    for i, spec in enumerate(cfg.distill.methods):
        try:
            method = build_method(spec)  # unknown options raise, naming them
        except KeyError as err:  # an unknown name: the message lists the registered ones
            problems.append(("distill", f"methods[{i}]: {err.args[0]}"))
            continue
        except (ValueError, TypeError) as err:  # options the method refuses: its message names them
            problems.append(("distill", str(err)))
            continue
        if method.needs_teacher and cfg.distill.teacher is None:
            problems.append(("distill", f"method '{spec['name']}' needs a teacher: set distill.teacher"))
    return problems


RUN_CHECKS = (model_problems, method_problems)


def validate_run(raw: dict[str, Any], source: str = "config", overrides: list[str] | None = None) -> Config:
    """``segkd.config.validate`` with the registry checks: a config a run can be built from."""
    return validate(raw, source, overrides, RUN_CHECKS)


def load_run_config(name_or_path: str | Path, overrides: list[str] | None = None) -> Config:
    """``segkd.config.load_config`` with the registry checks."""
    return load_config(name_or_path, overrides, RUN_CHECKS)
