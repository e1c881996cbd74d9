"""The package's folders import one way: cli -> commands -> engine -> distill/models/metrics -> data."""
import ast
from pathlib import Path

import segkd

PACKAGE = Path(segkd.__file__).parent
# A folder may import only from the folders listed after it (and from itself).
MAY_NOT_IMPORT = {
    "engine": {"commands", "cli"},
    "distill": {"commands", "engine", "cli"},
    "models": {"commands", "engine", "distill", "cli"},
    "metrics": {"commands", "engine", "distill", "models", "cli"},
    "data": {"commands", "engine", "distill", "models", "metrics", "cli"},
    # the schema and loading sit at the bottom: model and method names are checked by the engine
    "config": {"commands", "engine", "distill", "models", "metrics", "cli"},
}


def _imported_segkd_folders(path: Path) -> set[str]:
    folders = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "segkd" and len(parts) > 1:
                folders.add(parts[1])
    return folders


def test_imports_run_one_way():
    wrong = []
    for folder, forbidden in MAY_NOT_IMPORT.items():
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            for imported in _imported_segkd_folders(path) & forbidden:
                wrong.append(f"{path.relative_to(PACKAGE)} imports segkd.{imported}")
    assert not wrong, wrong


def test_commands_live_beside_the_engine():
    assert {"compare.py", "demo.py", "plots.py", "export.py", "benchmark.py"} <= {
        p.name for p in (PACKAGE / "commands").glob("*.py")}
    assert not {"compare.py", "demo.py", "plots.py", "export.py", "benchmark.py"} & {
        p.name for p in (PACKAGE / "engine").glob("*.py")}


def test_functions_and_methods_stay_small():
    """A function reads on one screen (<= 60 lines); a distillation method is one small file (< 150)."""
    long_functions = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long_functions.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    assert not long_functions, long_functions
    long_files = [f"{p.name} ({n} lines)" for p in sorted((PACKAGE / "distill").glob("*.py"))
                  if (n := len(p.read_text().splitlines())) >= 150]
    assert not long_files, long_files


# weights and images of data sets: tests read ../shared, runs write their own, the repository holds neither
UNTRACKED_KINDS = (".pt", ".pth", ".ckpt", ".safetensors", ".onnx", ".bin", ".npy", ".npz", ".jpg", ".jpeg",
                   ".png", ".bmp", ".mat", ".zip", ".tar", ".gz")


def test_no_weights_or_data_files_are_under_version_control():
    import subprocess

    import pytest

    root = PACKAGE.parent
    if not (root / ".git").exists():
        pytest.skip("not a git checkout: nothing is under version control here")
    listed = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True)
    tracked = listed.stdout.split("\n")
    assert [name for name in tracked if name.lower().endswith(UNTRACKED_KINDS)] == []
