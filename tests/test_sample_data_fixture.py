"""Tests that read the real sample data skip without it, except in CI, where its absence is an error."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

USES_DATA = '''
def test_reads_the_sample_data(shared_data):
    assert (shared_data / "sod300").is_dir()
'''


def run_pytest_on_a_data_test(tmp_path: Path, data_root: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """Pytest in a child process, with this suite's conftest, on one test that asks for ``shared_data``."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(Path(__file__).with_name("conftest.py"), project / "conftest.py")
    (project / "test_uses_data.py").write_text(USES_DATA)
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env["SEGKD_SHARED_DATA"] = str(data_root)
    env["COLUMNS"] = "1000"  # summary lines unclipped, so the whole reason can be matched
    if ci is not None:
        env["CI"] = ci
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(project)]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("ci", [None, "false"])
def test_missing_data_skips_naming_the_folder(tmp_path: Path, ci: str | None) -> None:
    missing = tmp_path / "no-data-here"
    result = run_pytest_on_a_data_test(tmp_path, missing, ci)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert f"sample data folder {missing} is missing" in result.stdout


def test_a_missing_data_set_is_named_not_just_the_root(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for name in ("sod300", "pysod_fixtures"):
        (root / name).mkdir(parents=True)
    result = run_pytest_on_a_data_test(tmp_path, root, None)
    assert "1 skipped" in result.stdout
    assert f"sample data folder {root / 'voc_samples'} is missing" in result.stdout


def test_missing_data_in_ci_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-data-here"
    result = run_pytest_on_a_data_test(tmp_path, missing, "true")
    assert result.returncode != 0
    assert "1 error" in result.stdout and "skipped" not in result.stdout
    assert f"sample data folder {missing} is missing" in result.stdout and "CI needs it" in result.stdout


def test_present_data_runs_the_test(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for name in ("sod300", "voc_samples", "pysod_fixtures"):
        (root / name).mkdir(parents=True)
    result = run_pytest_on_a_data_test(tmp_path, root, "true")
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr
