from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests share two CPU cores with each other's processes; more threads only thrash.
torch.set_num_threads(1)

# Real sample data sits beside the checkout (``../shared/data``); a clone of the repository alone lacks it.
SHARED_DATA_VARIABLE = "SEGKD_SHARED_DATA"
DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_DATA_SETS = ("sod300", "voc_samples", "pysod_fixtures")


def running_in_ci() -> bool:
    """CI services export ``CI`` (GitHub Actions, GitLab: ``true``); ``.ci/run`` does too."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_shared_data(root: Path) -> Path | None:
    """The first folder the data-reading tests need that is absent, or None."""
    if not root.is_dir():
        return root
    return next((root / name for name in SHARED_DATA_SETS if not (root / name).is_dir()), None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real sample data sets; tests that read them skip without them, except in CI where they must be."""
    root = Path(os.environ.get(SHARED_DATA_VARIABLE) or DEFAULT_SHARED_DATA)
    missing = missing_shared_data(root)
    if missing is not None:
        wanted = ", ".join(SHARED_DATA_SETS)
        reason = f"sample data folder {missing} is missing (set {SHARED_DATA_VARIABLE} to a folder with {wanted})"
        if running_in_ci():  # CI has the data: its absence is a broken setup, not a test to pass over
            pytest.fail(f"{reason}; CI needs it", pytrace=False)
        pytest.skip(reason)
    return root
