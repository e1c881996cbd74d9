"""Write tests/data/resolved_configs.json: every shipped config name resolved to its values.

Run configs as ``load_config(name).to_dict()``; comparison configs as their ``model_dump`` plus the run
config of every entry at its first seed (its other seeds differ only in ``train.seed`` and
``output_dir``). tests/test_configs_resolved.py checks that each name still resolves to these values,
so a change in how configs are written (bases, fragments) cannot change a run unnoticed. Rewrite it
only for a change meant to alter resolved values, and say which in the commit.
Run from the repository root: ``python tests/data/resolve_shipped_configs.py NAME...`` (the others are
kept; default: the names already in the JSON, i.e. every file segkd/configs held before configs composed).
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).parent / "resolved_configs.json"


def without_progress(run: dict[str, Any]) -> dict[str, Any]:
    """A comparison shows a progress bar only in a terminal: the key depends on where it runs."""
    run["train"].pop("progress", None)
    return run


def resolve(name: str) -> dict[str, Any]:
    from segkd.commands.compare import load_compare_config, run_configs
    from segkd.config import load_config, read_config

    if read_config(name)[0] == "run":
        return {"kind": "run", "config": load_config(name).to_dict()}
    cc = load_compare_config(name)
    configs = run_configs(cc)
    runs = {entry.name: without_progress(configs[(entry.name, cc.seeds_of(entry)[0])].to_dict())
            for entry in cc.entries}
    return {"kind": "compare", "config": cc.model_dump(mode="json"), "runs": runs}


def main(names: list[str]) -> None:
    stored = json.loads(OUTPUT.read_text()) if OUTPUT.is_file() else {}
    names = names or sorted(stored)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resolved = {name: resolve(name) for name in names}
    OUTPUT.write_text(json.dumps({**stored, **resolved}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUTPUT}: {len(resolved)} of {len(stored | resolved)} configs")


if __name__ == "__main__":
    main(sys.argv[1:])
