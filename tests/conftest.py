"""Fixtures and the tiny seeded generator shared by several test files."""

import numpy as np
import pytest
import torch


def tiny_generator(layout: str = "reference", **cfg) -> torch.nn.Module:
    """A small seeded generator (64 px works): the reference layout at ngf=8, or huggan at ngf=4."""
    from p2p_demo.nets import GeneratorConfig, build_generator, init_weights

    torch.manual_seed(0)
    if layout == "huggan":
        config = GeneratorConfig(ngf=4, layout="huggan", norm="instance", **cfg)
    else:
        config = GeneratorConfig(ngf=8, num_downs=6, **cfg)
    g = build_generator(config)
    init_weights(g)
    return g


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
