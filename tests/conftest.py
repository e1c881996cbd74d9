from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Tests share two CPU cores with each other's processes; more threads only thrash.
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real sample data that sits beside the checkout (``../shared/data``)."""
    assert SHARED_DATA.is_dir(), f"expected the shared sample data at {SHARED_DATA}"
    return SHARED_DATA
