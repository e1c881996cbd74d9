"""One YAML format for every run: the schema (``schema``), files, bases, fragments and overrides
(``loading``), and the table of keys (``describe``). The names below are this package's interface."""
from segkd.config.describe import describe_keys
from segkd.config.loading import (
    ALIASES,
    CONFIG_DIR,
    FRAGMENT_FOLDERS,
    apply_overrides,
    deep_merge,
    fill_vars,
    find_config,
    load_config,
    read_config,
    read_yaml,
    save_config,
    shipped_names,
)
from segkd.config.schema import (
    MIN_TRAINING_SIDE,
    TASK_METRICS,
    Config,
    ConfigCheck,
    ConfigError,
    DistillConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TeacherConfig,
    TrainConfig,
    blame_config,
    validate,
)

__all__ = [
    "ALIASES", "CONFIG_DIR", "FRAGMENT_FOLDERS", "MIN_TRAINING_SIDE", "TASK_METRICS", "Config", "ConfigCheck",
    "ConfigError", "DistillConfig", "EvalConfig", "LossConfig", "ModelConfig", "OptimConfig", "ScheduleConfig",
    "TeacherConfig", "TrainConfig", "apply_overrides", "blame_config", "deep_merge", "describe_keys", "fill_vars",
    "find_config", "load_config", "read_config", "read_yaml", "save_config", "shipped_names", "validate",
]
