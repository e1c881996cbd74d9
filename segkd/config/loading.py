"""Config files: names, bases, compositions of fragments, ``vars``, ``--set`` overrides, the resolved dump.

A config is a YAML mapping. It may start from others with ``base: other.yaml`` or a list
``base: [a.yaml, b.yaml]`` (each resolved next to the file, else as a shipped name), merged left to
right, then the file itself: keys given later replace earlier ones, dicts merge key by key.

A name that is no file is a composition of fragments (the files in ``segkd/configs/{datasets,models,
methods,recipes,splits}``): ``A+B+C`` merges the parts left to right (each a file, a shipped name such as
``methods/byot``, or a fragment's stem such as ``byot``) and names the run after them
(``fusion_camo_byot``); the names in ``ALIASES`` (``byot_camo``: the fusion network on CAMO with BYOT's
recipe) compose the same way and keep their own name.

``vars: {dataset: camo}`` names a value that strings elsewhere use as ``${dataset}`` (Tf-KD's teacher is
``runs/fusion_${dataset}/last.pt``), and ``${name}`` is the config's name (``output_dir: runs/${name}``);
they are filled in once everything is merged, and ``vars`` is dropped.

``kind: run`` or ``kind: compare`` says which schema a file follows (a run, or a comparison of runs for
``segkd compare``); a file without it is a comparison when it has a comparison's own keys
(``run_config`` and ``entries``), else a run. Overrides use ``key.sub=value`` with YAML-typed
values (``train.epochs=3``).
"""
from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any

import yaml

from segkd.config.schema import Config, ConfigCheck, ConfigError, validate

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
FRAGMENT_FOLDERS = ("datasets", "models", "methods", "recipes", "splits")
KINDS = ("run", "compare")
COMPARE_KEYS = ("run_config", "entries")  # what tells a comparison that does not say its kind
# Shipped names made of fragments, kept from when each had its own file. ``{dataset}`` stands for any
# fragment in datasets/, ``{method}`` for any in methods/. A file of the same name comes first.
ALIASES = {
    "fusion_{dataset}": ("models/fusion", "datasets/{dataset}"),
    "{method}_{dataset}": ("models/fusion", "datasets/{dataset}", "methods/{method}"),
    "{dataset}_lite0": ("models/fusion_lite0", "datasets/{dataset}"),
    "{dataset}_lite0_holdout": ("models/fusion_lite0", "datasets/{dataset}", "splits/holdout"),
}
_VAR = re.compile(r"\$\{(\w+)\}")


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ---------------------------------------------------------------- names


def _shipped_file(path: Path) -> Path | None:
    for candidate in (path, CONFIG_DIR / path, CONFIG_DIR / f"{path}.yaml"):
        if candidate.is_file():
            return candidate
    return None


def _stems(folder: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / folder).glob("*.yaml"))


def _alias_parts(name: str) -> list[str] | None:
    """The fragments of an alias (``byot_camo`` -> models/fusion, datasets/camo, methods/byot), or None."""

    def slot(match: re.Match[str]) -> str:  # {dataset} -> (?P<dataset>camo|cod10k|...): the folder's stems
        return f"(?P<{match[1]}>{'|'.join(re.escape(stem) for stem in _stems(match[1] + 's'))})"

    for pattern, fragments in ALIASES.items():
        match = re.fullmatch(re.sub(r"\\\{(\w+)\\\}", slot, re.escape(pattern)), name)
        if match:
            return [fragment.format(**match.groupdict()) for fragment in fragments]
    return None


def shipped_names() -> list[str]:
    """Every name ``segkd train`` or ``segkd compare`` takes without a path: the files in ``segkd/configs``
    and the aliases, each slot filled with every fragment of its folder."""
    names = {p.stem for p in CONFIG_DIR.glob("*.yaml")}
    for pattern in ALIASES:
        expanded = [pattern]
        for slot in re.findall(r"\{(\w+)\}", pattern):
            expanded = [n.replace(f"{{{slot}}}", stem) for n in expanded for stem in _stems(f"{slot}s")]
        names.update(expanded)
    return sorted(names)


def _fragment(part: str) -> list[Path]:
    """The files one part of an ``A+B`` name stands for: a file, a shipped name or a fragment's stem."""
    stem_matches = [CONFIG_DIR / folder / f"{part}.yaml" for folder in FRAGMENT_FOLDERS]
    stem_matches = [p for p in stem_matches if p.is_file()]
    if "/" not in part and len(stem_matches) == 1 and _shipped_file(Path(part)) is None:
        return stem_matches
    return _sources(part)[0]


def _sources(name_or_path: str | Path, relative_to: Path | None = None) -> tuple[list[Path], str | None]:
    """The files a name stands for, merged in this order, and the run name a composition gives (else None)."""
    path = Path(name_or_path)
    if relative_to is not None and (relative_to / path).is_file():
        return [relative_to / path], None
    found = _shipped_file(path)
    if found is not None:
        return [found], None
    name = str(name_or_path).removesuffix(".yaml")
    if "+" in name:
        return [p for part in name.split("+") for p in _fragment(part)], "_".join(
            Path(part).stem for part in name.split("+"))
    parts = _alias_parts(name)
    if parts is not None:
        return [CONFIG_DIR / f"{part}.yaml" for part in parts], name
    names = shipped_names()
    close = difflib.get_close_matches(path.stem, names, n=5, cutoff=0.5)
    hint = f"close names: {', '.join(close)}" if close else f"{len(names)} are shipped, from {CONFIG_DIR}"
    raise ConfigError(f"config '{name_or_path}' not found: not a file, a shipped config nor a composition of "
                      f"fragments such as byot+camo ({hint})")


def find_config(name_or_path: str | Path) -> Path:
    """The file of a path or shipped name (``tiny_binary``, ``methods/byot``); for a composition of
    fragments (``byot_camo``, ``fusion+camo``) the name itself, which ``read_yaml`` resolves."""
    paths, composed = _sources(name_or_path)
    return paths[0] if composed is None else Path(str(name_or_path))


# ---------------------------------------------------------------- reading


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {type(raw).__name__}")
    return raw


def _merged(paths: list[Path], name: str | None, chain: tuple[Path, ...]) -> dict[str, Any]:
    """``paths`` merged in order, each after its own bases; ``name`` (a composition's) set last."""
    merged: dict[str, Any] = {}
    for path in paths:
        path = path.resolve()
        if path in chain:
            loop = " -> ".join(p.name for p in (*chain[chain.index(path):], path))
            raise ConfigError(f"{chain[-1]}: base links form a cycle: {loop}")
        raw = _read_mapping(path)
        bases = raw.pop("base", None)
        bases = [bases] if isinstance(bases, str) else bases
        if bases is not None and not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
            raise ConfigError(f"{path}: base: give a config file or a list of them, got {bases!r}")
        for base in bases or []:
            try:
                base_paths, base_name = _sources(base, relative_to=path.parent)
            except ConfigError:
                raise ConfigError(f"{path}: base '{base}' not found: no file {path.parent / base}, nor a shipped "
                                  "config or a composition of fragments") from None
            merged = deep_merge(merged, _merged(base_paths, base_name, (*chain, path)))
        merged = deep_merge(merged, raw)
    if name is not None:
        merged["name"] = name
    return merged


def fill_vars(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """``raw`` without ``vars``, each ``${NAME}`` in its strings replaced by ``vars[NAME]`` (``${name}``: the
    config's ``name``)."""
    names = raw.get("vars") or {}
    if not isinstance(names, dict):
        raise ConfigError(f"{source}: vars: give a mapping of names to values, got {names!r}")
    names = {"name": raw.get("name", "run"), **names}

    def fill(node: Any, key: str) -> Any:
        if isinstance(node, dict):
            return {k: fill(v, f"{key}.{k}" if key else str(k)) for k, v in node.items() if key or k != "vars"}
        if isinstance(node, list):
            return [fill(v, f"{key}[{i}]") for i, v in enumerate(node)]
        if not isinstance(node, str):
            return node
        for var in _VAR.findall(node):
            if var not in names:
                raise ConfigError(f"{source}: {key}: '${{{var}}}' is not in vars ({', '.join(names) or 'none set'}); "
                                  f"compose it with a fragment that sets it (e.g. a data set: byot_camo)")
        return _VAR.sub(lambda match: str(names[match.group(1)]), node)

    return fill(raw, "")


def _resolve(name_or_path: str | Path) -> tuple[str, dict[str, Any], str]:
    """``(kind, raw, source)``, ``vars`` not yet filled: ``source`` names the file, or the composition,
    in messages."""
    paths, name = _sources(name_or_path)
    source = str(paths[0]) if name is None else str(name_or_path)
    raw = _merged(paths, name, ())
    declared = raw.pop("kind", None)
    if declared is None:
        kind = "compare" if all(key in raw for key in COMPARE_KEYS) else "run"
    elif declared in KINDS:
        kind = declared
    else:
        raise ConfigError(f"{source}: kind: '{declared}' is neither run nor compare")
    return kind, raw, source


def read_config(name_or_path: str | Path, fill: bool = True) -> tuple[str, dict[str, Any]]:
    """``(kind, raw)``: the config a name or file stands for, bases and fragments merged, ``vars`` filled
    (with ``fill=False`` kept, for a caller that applies overrides first and then calls ``fill_vars``)."""
    kind, raw, source = _resolve(name_or_path)
    return kind, fill_vars(raw, source) if fill else raw


def read_yaml(path: str | Path, fill: bool = True) -> dict[str, Any]:
    """The raw config of a file or name (see ``read_config``), without its ``kind``."""
    return read_config(path, fill)[1]


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a raw config dict."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: not of the form key.sub=value")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: '{part}' is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            reason = str(err).splitlines()[0]
            raise ConfigError(f"--set {item}: '{value}' is not a valid YAML value ({reason}); "
                              "quote text with special characters, e.g. key='a: b'") from None
    return raw


def load_config(name_or_path: str | Path, overrides: list[str] | None = None,
                checks: tuple[ConfigCheck, ...] = ()) -> Config:
    """Read a run config (file, shipped name or composition), apply overrides and validate."""
    kind, raw, source = _resolve(name_or_path)
    if kind != "run":
        raise ConfigError(f"{source}: a comparison config (kind: {kind}), not a run: run it with "
                          f"segkd compare {name_or_path}")
    # vars are filled after --set, so `--set name=x` moves `runs/${name}` and `--set vars.dataset=camo` counts
    return validate(fill_vars(apply_overrides(raw, overrides or []), source), source, overrides, checks)


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config so the run can be repeated exactly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    except OSError as err:
        if err.filename is None:  # a failed write() (full disk) does not name the file
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
