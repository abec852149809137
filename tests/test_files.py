"""p2p_demo.files: the one atomic write, the strict from_dict; nets.pick_device."""

import numpy as np
import pytest
import torch

from p2p_demo.edges import LineStyle
from p2p_demo.files import atomic_write, strict_from_dict
from p2p_demo.nets import GeneratorConfig, pick_device


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "a.json"
    atomic_write(path, lambda p: p.write_text("old"))

    def fail_half_way(p):
        p.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(path, fail_half_way)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind
    atomic_write(path, lambda p: p.write_text("new"), durable=True)
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_write_keeps_the_suffix_for_writers_that_add_one(tmp_path):
    path = tmp_path / "train.npz"
    atomic_write(path, lambda p: np.savez(p, a=np.arange(3)))  # np.savez appends .npz unless present
    assert [p.name for p in tmp_path.iterdir()] == ["train.npz"]
    assert np.load(path)["a"].tolist() == [0, 1, 2]


def test_strict_from_dict_names_the_unknown_keys():
    assert strict_from_dict(GeneratorConfig, {"ngf": 8}, "generator config keys").ngf == 8
    with pytest.raises(ValueError, match=r"unknown generator config keys \['nfg'\]; expected \[.*'ngf'"):
        GeneratorConfig.from_dict({"nfg": 8})
    with pytest.raises(ValueError, match=r"unknown LineStyle fields \['width'\]"):
        LineStyle.from_dict({"width": 2})


def test_pick_device():
    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device() == pick_device("auto") == auto
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
