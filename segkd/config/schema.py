"""The run config's schema: one pydantic model per section, unknown keys refused, and ``validate``,
which turns a raw dict into a ``Config`` or a ``ConfigError`` naming each key (or ``--set`` argument)
at fault.

The schema checks what it can see alone: types, ranges, settings that only fail together. Whether
``model.name`` and ``distill.methods`` name registered models and methods with options they accept
is checked where runs are built (``segkd.engine.checks``), since the config sits below those layers.
"""
from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segkd.data.config import DataConfig

_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# The metrics validation computes per task, any of which may pick best.pt (eval.metric).
TASK_METRICS = {
    "semantic": ("mIoU", "mAcc", "allAcc"),
    "binary": ("MAE", "maxFm", "meanFm", "adpFm", "Sm", "maxEm", "meanEm", "adpEm", "wFm", "maxFm_datasetPR"),
}
# Below this side a training crop (data.crop_size) or resize (data.train_size) gives networks whose
# features are 1/8 of the input or smaller next to nothing to learn from.
MIN_TRAINING_SIDE = 16


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key or file."""


@contextlib.contextmanager
def blame_config(section: str) -> Iterator[None]:
    """Turn a plain ``ValueError``/``KeyError`` raised while building ``section`` into a
    ``ConfigError`` naming it: a model or method that cannot be built from the config is a
    config problem (a pretrained file that does not fit, taps that do not exist)."""
    try:
        yield
    except (ValueError, KeyError) as err:
        if type(err) not in (ValueError, KeyError):  # subclasses already say what they are
            raise
        raise ConfigError(f"{section}: {err.args[0] if err.args else err}") from err


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelConfig(BaseModel):
    """``name`` picks a registered model; every other key is a keyword argument of its builder."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    name: str = Field(description="registered model name, see `segkd models`")

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TeacherConfig(_Strict):
    model: ModelConfig
    checkpoint: Path = Field(description="a segkd checkpoint or a plain state-dict file")
    key_map: dict[str, str] = Field(
        default_factory=dict,
        description="prefix renames applied to a foreign state dict's keys, e.g. {'module.': ''}",
    )
    cache: Path | None = Field(
        None,
        description="offline distillation: a folder of the teacher's logits, filled on first use by running "
        "the teacher once on each un-augmented training image, then read (and moved with each crop's "
        "augmentation) instead of running the teacher every step; a cache made for another teacher, "
        "training list or preprocessing is refused. In segkd compare, 'auto' = one folder per teacher "
        "entry under its output_dir. None: the teacher runs live",
    )

    cache_scales: list[float] = Field(
        default_factory=lambda: [1.0],
        description="with cache: the teacher's cached map is the mean of its logits over the image read at "
        "these scales (multi-scale testing, paid once per image), e.g. [0.75, 1.0, 1.25, 1.5]",
    )
    cache_flip: bool = Field(False, description="with cache: also average the teacher over the mirrored image")

    @model_validator(mode="after")
    def _check_cache(self) -> TeacherConfig:
        if self.cache is not None and str(self.cache) == "auto":
            raise ValueError("cache: 'auto' is resolved by segkd compare only; give a folder")
        if not self.cache_scales or any(s <= 0 for s in self.cache_scales):
            raise ValueError(f"cache_scales: {self.cache_scales} must be a non-empty list of positive scales")
        if self.cache is None and (self.cache_scales != [1.0] or self.cache_flip):
            raise ValueError("cache_scales / cache_flip shape a teacher cache; set distill.teacher.cache too")
        return self


class DistillConfig(_Strict):
    teacher: TeacherConfig | None = Field(
        None, description="{model: {...}, checkpoint: PATH, key_map: {}, cache: FOLDER}: the frozen teacher, for "
        "methods that need one; cache: read its logits from a teacher cache instead of running it each step "
        "(offline distillation, filled on first use)")
    methods: list[dict[str, Any]] = Field(
        default_factory=list, description="[{name: logits_kd, temperature: 4, weight: 1.0}, ...]; a method listed "
        "twice (e.g. cwd at two layers) runs twice, its terms logged as cwd/... and cwd_2/..."
    )

    @model_validator(mode="after")
    def _check_names(self) -> DistillConfig:
        for i, spec in enumerate(self.methods):
            if "name" not in spec:
                raise ValueError(f"methods[{i}] needs a 'name'")
        return self


class LossConfig(_Strict):
    main_weight: float = Field(1.0, ge=0.0, description="weight of the supervised loss on the main output")
    aux_weight: float = Field(0.4, ge=0.0, description="weight of the supervised loss on the aux output (PSPNet)")
    distill_share: float | None = Field(
        None, ge=0.0, le=1.0,
        description="share α of the loss given to the distillation terms: the task terms are scaled "
        "by 1 − α and the methods' terms by α, so distilling keeps the gradient scale of training "
        "alone (with a teacher that agrees with the labels, 'CE + KD' doubles it). None: plain sum",
    )


class OptimConfig(_Strict):
    lr: float = Field(0.01, ge=0.0,
                      description="base learning rate of SGD (scaled by the LR multipliers and the schedule)")
    momentum: float = Field(0.9, ge=0.0, description="SGD momentum")
    weight_decay: float = Field(1e-4, ge=0.0, description="L2 weight decay")
    nesterov: bool = Field(False, description="Nesterov momentum")
    backbone_lr_mult: float = Field(1.0, ge=0.0, description="LR factor of backbone parameters")
    head_lr_mult: float = Field(10.0, ge=0.0, description="LR factor of head (and method) parameters")

    @model_validator(mode="after")
    def _check_nesterov(self) -> OptimConfig:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: Nesterov momentum needs a momentum above 0; set optim.momentum or "
                             "optim.nesterov=false")
        return self


class ScheduleConfig(_Strict):
    name: Literal["poly", "triangle", "constant"] = Field(
        "poly",
        description="poly: lr·(1−it/max)^power per iteration (semseg); "
        "triangle: linear warm-up to the middle epoch then linear decay, per epoch (F3Net)",
    )
    power: float = Field(0.9, description="exponent of the poly schedule")
    warmup: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="fraction of the iterations over which the LR ramps up linearly from ~0 (0 = off)",
    )


class TrainConfig(_Strict):
    epochs: int = Field(50, ge=1, description="passes over the training split (the schedule spans them)")
    max_iters: int | None = Field(None, ge=1, description="stop after this many iterations (quick runs)")
    seed: int = Field(1, description="seed of weights, data order and augmentation")
    deterministic: bool = Field(False, description="deterministic kernels (slower; bit-exact reruns)")
    amp: Literal["none", "bf16", "fp16"] = Field("none", description="mixed precision on CUDA")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1 ... (mps on Apple silicon)")
    sync_bn: bool = Field(False, description="DDP on CUDA: synchronise BatchNorm statistics across GPUs")
    channels_last: bool = Field(
        False, description="train the student, the teacher and the methods' parts in the channels-last memory "
        "format (floats differ from the default in rounding); docs/results.md has what it saved on a CPU")
    val_every: int = Field(1, ge=1, description="validate every N epochs (and after the last)")
    log_every: int = Field(10, ge=1, description="log the losses every N iterations (history.jsonl, TensorBoard)")
    checkpoint_every_iters: int | None = Field(
        None, ge=1, description="also checkpoint every N iterations, not only each epoch"
    )
    progress: bool = Field(True, description="show a progress bar")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE_PATTERN.fullmatch(value):
            raise ValueError(f"unknown device '{value}'; use auto, cpu, cuda, cuda:N (the N-th GPU) or mps")
        return value


class EvalConfig(_Strict):
    scales: list[float] = Field(default_factory=lambda: [1.0], description="semantic: multi-scale test factors")
    flip: bool = Field(False, description="semantic: average with the mirrored prediction")
    sliding: bool = Field(True, description="semantic: sliding-window inference with the crop size")
    stride_rate: float = Field(2 / 3, description="semantic: sliding-window stride as a fraction of the crop")
    metric: str | None = Field(None, description="metric that picks best.pt on the validation split (default "
                               "mIoU / MAE); a run whose validation data is the test split picks none")

    @field_validator("scales")
    @classmethod
    def _positive_scales(cls, value: list[float]) -> list[float]:
        if not value or any(s <= 0 for s in value):
            raise ValueError(f"{value} must be a non-empty list of positive scales, e.g. [1.0] or [0.75, 1.0, 1.25]")
        return value

    @field_validator("stride_rate")
    @classmethod
    def _stride_in_unit_interval(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"{value} must lie in (0, 1]: the window moves by this fraction of the crop")
        return value


class Config(_Strict):
    task: Literal["semantic", "binary"] = Field(description="semantic (class per pixel) or binary (object mask)")
    name: str = Field("run", description="run name (default output folder runs/<name>)")
    output_dir: Path | None = Field(None, description="default: runs/<name>")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig
    distill: DistillConfig = Field(default_factory=DistillConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        return self.output_dir or Path("runs") / self.name

    @property
    def best_metric(self) -> tuple[str, bool]:
        """(metric name, higher is better)."""
        name = self.eval.metric or ("mIoU" if self.task == "semantic" else "MAE")
        return name, name not in {"MAE"}

    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", exclude_none=False)
        if self.task == "binary":  # one foreground channel: class counts and names do not apply
            for key in ("num_classes", "class_names"):
                out["data"].pop(key, None)
        return out


# ---------------------------------------------------------------- validation


# YAML 1.1 (PyYAML) reads these words as booleans; a user who typed one usually meant text.
_YAML_BOOL_WORDS = {"yes", "no", "on", "off", "y", "n"}


def _override_for(loc: str, overrides: list[str]) -> str | None:
    """The last ``--set`` argument whose key is ``loc`` or a section holding it."""
    for item in reversed(overrides):
        key = item.split("=", 1)[0].strip()
        if loc == key or loc.startswith(key + ".") or key.startswith(loc + "."):
            return item
    return None


def _format_errors(err: ValidationError | list[tuple[str, str]], source: str, overrides: list[str] = ()) -> str:
    """The message of a config that failed validation; ``err``: pydantic's errors, or ``(key, message)``
    pairs found after it."""
    lines = [f"{source}: invalid config"]
    problems = err if isinstance(err, list) else [
        (".".join(str(p) for p in e["loc"]) or "(top level)",
         "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, "))
        for e in err.errors()]
    for loc, msg in problems:
        item = _override_for(loc, list(overrides))
        if item is not None:
            value = item.split("=", 1)[1].strip()
            if value.lower() in _YAML_BOOL_WORDS:
                key = item.split("=", 1)[0]
                msg += (f" (YAML reads {value} as the boolean {yaml.safe_load(value)}; for the text, "
                        f"quote it: --set \"{key}='{value}'\")")
            lines.append(f"  --set {item}: {msg}")
        else:
            lines.append(f"  {loc}: {msg}")
    if len(lines) == 2 and lines[1].lstrip().startswith("--set "):
        return lines[1].strip()  # the --set argument is to blame, not the file
    return "\n".join(lines)


# A check beyond the schema: ``(key, message)`` for each problem it finds in a valid config.
ConfigCheck = Callable[["Config"], list[tuple[str, str]]]


def validate(raw: dict[str, Any], source: str = "config", overrides: list[str] | None = None,
             checks: Sequence[ConfigCheck] = ()) -> Config:
    """The validated config; settings that only fail together (``eval.metric`` and ``task``) are checked
    here too, so a run never stops at its first validation; settings that train to nothing warn.

    ``checks`` add the problems a layer above finds (``segkd.engine.checks``: registered model and method
    names and options), reported with the others, each blamed on its key or ``--set`` argument.
    """
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source, overrides or [])) from None
    problems = _cross_check(cfg) + [problem for check in checks for problem in check(cfg)]
    if problems:
        raise ConfigError(_format_errors(problems, source, overrides or []))
    for message in _suspicious(cfg):
        warnings.warn(f"{source}: {message}", UserWarning, stacklevel=2)
    return cfg


def _cross_check(cfg: Config) -> list[tuple[str, str]]:
    """``(key, message)`` for settings that are valid alone but not in this config."""
    problems = []
    metrics = TASK_METRICS[cfg.task]
    if cfg.eval.metric is not None and cfg.eval.metric not in metrics:
        import difflib

        close = [m for m in metrics if m.lower() == cfg.eval.metric.lower()]
        close = close or difflib.get_close_matches(cfg.eval.metric, metrics, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        problems.append(("eval.metric", f"'{cfg.eval.metric}' is not a metric of the {cfg.task} task{hint}; "
                                        f"choose one of {', '.join(metrics)}"))
    if cfg.loss.main_weight == 0 and not cfg.distill.methods:
        problems.append(("loss.main_weight", "0 with distill.methods empty: nothing would train the model's "
                                             "output; give a weight above 0 or a distillation method"))
    return problems


def _suspicious(cfg: Config) -> list[str]:
    """Settings that are valid but train to nothing, worth a warning before a run spends its time."""
    found = []
    o = cfg.optim
    if o.lr == 0 or o.backbone_lr_mult == o.head_lr_mult == 0:
        found.append(f"optim.lr is {o.lr} with LR factors {o.backbone_lr_mult} (backbone) and {o.head_lr_mult} "
                     "(head): training will not change the weights")
    key, side = ("data.crop_size", cfg.data.crop_size) if cfg.task == "semantic" else (
        "data.train_size", cfg.data.train_size)
    if side < MIN_TRAINING_SIDE:
        found.append(f"{key} is {side}: training on images under {MIN_TRAINING_SIDE} pixels a side leaves the "
                     "network next to nothing to learn from (its features are 1/8 of that or smaller)")
    return found
