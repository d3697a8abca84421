import pytest

from memento import Memory


@pytest.fixture
def memory(tmp_path):
    """A fresh cache folder, quiet."""
    return Memory(tmp_path / "cache", verbose=0)
