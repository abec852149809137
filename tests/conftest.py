"""Fixtures shared by several test files."""

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def edge_map() -> np.ndarray:
    """A 64x64 edge map (black strokes on white) drawn from a fixed seed."""
    rng = np.random.default_rng(0)
    img = np.full((64, 64), 255, np.uint8)
    for _ in range(12):
        y, x = rng.integers(4, 60, 2)
        img[y : y + 2, x : x + 20] = 0
    return img


@pytest.fixture
def one_thread():
    """One intra-op thread: on a small shared CPU, two spinning OpenMP threads per test run slower.
    Training test files use it for every test (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny prepared dataset in the contract format (tests/test_train.py's make_dataset)."""
    from test_train import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data") / "tiny")
