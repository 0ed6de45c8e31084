"""Fixtures for the data-layer tests (helpers live in datahelp.py)."""
import pytest

from datahelp import write_indexed


@pytest.fixture
def indexed(tmp_path):
    """Factory: indexed(n, name='d.h5', first=0) -> path of a dataset whose values encode the sample index."""
    def make(n: int, name: str = "d.h5", first: int = 0, dtype: str = "float32"):
        return write_indexed(tmp_path / name, n, first=first, dtype=dtype)
    return make
