"""Fixtures shared by several test files."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def edge_map() -> np.ndarray:
    """A 64x64 edge map (black strokes on white) drawn from a fixed seed."""
    rng = np.random.default_rng(0)
    img = np.full((64, 64), 255, np.uint8)
    for _ in range(12):
        y, x = rng.integers(4, 60, 2)
        img[y : y + 2, x : x + 20] = 0
    return img
