"""The command line: render / edges / models, file and folder inputs, one-line errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from p2p_demo.__main__ import main
from p2p_demo.edges import LineStyle
from p2p_demo.hub import save_pretrained
from p2p_demo.nets import GeneratorConfig, build_generator
from train.discriminator import init_weights

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    g = build_generator(GeneratorConfig(in_channels=1, ngf=8, num_downs=6))
    init_weights(g)
    folder = tmp_path_factory.mktemp("weights") / "tiny"
    save_pretrained(g, folder, line_style=LineStyle(size=64, stroke_width=2).to_dict(), name="tiny",
                    description="test model", expects="outlines", license="mit", dtype=torch.float32)
    return folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    from skimage import data

    folder = tmp_path_factory.mktemp("inputs")
    sketch = np.full((300, 200, 3), 255, np.uint8)
    sketch[60:240, 50] = 0
    sketch[60:240, 150] = 0
    sketch[60, 50:151] = 0
    sketch[240, 50:151] = 0
    Image.fromarray(sketch).save(folder / "box.png")
    Image.fromarray(data.chelsea()).save(folder / "cat.jpg")
    return folder


def run(*args: str) -> int:
    return main(list(args))


def test_render_one_file_with_samples(model_dir, inputs, tmp_path):
    out = tmp_path / "box.png"
    assert run("render", "--model", str(model_dir), "--input", str(inputs / "box.png"), "--out", str(out),
               "-n", "3", "--seed", "4") == 0
    files = sorted(tmp_path.glob("box_*.png"))
    assert [f.name for f in files] == ["box_0.png", "box_1.png", "box_2.png"]
    imgs = [np.asarray(Image.open(f)) for f in files]
    assert all(i.shape == (64, 64, 3) for i in imgs)
    assert np.abs(imgs[0].astype(int) - imgs[1].astype(int)).mean() > 0.5  # dropout samples differ


def test_render_same_seed_same_file(model_dir, inputs, tmp_path):
    for name in ("a.png", "b.png"):
        run("render", "--model", str(model_dir), "--input", str(inputs / "box.png"), "--out", str(tmp_path / name),
            "--seed", "11")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png")))


def test_render_folder_with_edges_and_size(model_dir, inputs, tmp_path):
    assert run("render", "--model", str(model_dir), "--input", str(inputs), "--out", str(tmp_path / "out"),
               "--edges", "canny", "--size", "128", "--deterministic") == 0
    outs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outs == ["box.png", "cat.png"]
    assert np.asarray(Image.open(tmp_path / "out" / "cat.png")).shape == (128, 128, 3)


def test_render_edges_none_feeds_image_as_is(model_dir, inputs, tmp_path):
    assert run("render", "--model", str(model_dir), "--input", str(inputs / "cat.jpg"), "--out",
               str(tmp_path / "x.png"), "--edges", "none", "--size", "96") == 0
    assert np.asarray(Image.open(tmp_path / "x.png")).shape == (96, 96, 3)


def test_edges_command_hed(inputs, tmp_path):
    assert run("edges", "--input", str(inputs / "cat.jpg"), "--out", str(tmp_path / "e.png"), "--method", "hed") == 0
    e = np.asarray(Image.open(tmp_path / "e.png"))
    assert e.shape == (256, 256)
    assert set(np.unique(e)) <= {0, 255}
    assert 0.01 < (e == 0).mean() < 0.4  # some lines, mostly paper


def test_models_lists_registry(capsys):
    assert run("models") == 0
    out = capsys.readouterr().out
    assert "huggan/pix2pix-edge2shoes" in out and "openmoji" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no-such-model"], "no-such-model"),
        (["--input", "missing.png"], "missing.png: no such file"),
        (["-n", "0"], "-n must be between"),
    ],
)
def test_errors_are_one_line_and_nonzero(model_dir, inputs, tmp_path, args, message, capsys):
    base = {"--model": str(model_dir), "--input": str(inputs / "box.png"), "--out": str(tmp_path / "o.png")}
    argv = ["render"]
    for k, v in base.items():
        if k not in args:
            argv += [k, v]
    argv += args
    assert run(*argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_process_exit_status_and_single_line(inputs, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "p2p_demo", "render", "--model", str(tmp_path / "nothing"),
                           "--input", str(inputs / "box.png"), "--out", str(tmp_path / "o.png")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nothing" in lines[0], proc.stderr


def test_bad_image_file_is_one_line(model_dir, tmp_path, capsys):
    bad = tmp_path / "fake.png"
    bad.write_text("this is not an image")
    assert run("render", "--model", str(model_dir), "--input", str(bad), "--out", str(tmp_path / "o.png")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fake.png" in err[0] and "not an image" in err[0]


def test_blank_sketch_says_nothing_drawn(model_dir, tmp_path, capsys):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (64, 64), "white").save(blank)
    assert run("render", "--model", str(model_dir), "--input", str(blank), "--out", str(tmp_path / "o.png"),
               "--edges", "sketch") == 1
    assert "nothing drawn" in capsys.readouterr().err.lower()
