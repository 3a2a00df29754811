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


@pytest.fixture
def memory_states(monkeypatch):
    """``record(memory)`` -> the list of every per-pass state ``memory.new_state`` makes from then on.

    The memory bank keeps nothing per image on its modules (each pass makes a ``MemoryBankState`` and the
    step loop carries it), so tests that inspect a pass's reads record the states the passes make.
    """

    def record(memory) -> list:
        states: list = []
        new_state = memory.new_state

        def recording(*args, **kwargs):
            states.append(new_state(*args, **kwargs))
            return states[-1]

        monkeypatch.setattr(memory, "new_state", recording)
        return states

    return record
