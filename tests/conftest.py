import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("HPCM_TEST", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared"
if not SHARED.exists():  # CI clones main next to shared/
    SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def kodak_dir(shared_dir) -> Path:
    return shared_dir / "data" / "kodak"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def no_bundled_weights(tmp_path, monkeypatch):
    """Hide the shipped trained weights: presets load their deterministic initial (untrained) weights."""
    import hpcm.models.io as mio

    monkeypatch.setattr(mio, "WEIGHTS_DIR", tmp_path / "no-bundled-weights")
