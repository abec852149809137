"""Freehand augmentation (train.freehand): each fault does what it says, the result is still in the
canonical line style and close to the drawing, the batch wrapper keeps its random stream aligned,
and `fit --freehand` / `evaluate --freehand` run it."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from p2p_demo.edges import LineStyle, canonical_lines, normalize_sketch
from p2p_demo.examples import example_paths
from train import freehand as fh
from train import fit as fit_mod
from train.config import ConfigError, TrainConfig
from train.dataset import PairedData
from train.evaluate import evaluate
from conftest import tiny

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

STYLE = LineStyle()  # 256 px, 3 px lines: the bundled openmoji model's style


def drawings() -> list[np.ndarray]:
    """The app's example sketches in the canonical style, 256 px."""
    return [normalize_sketch(str(p), STYLE).image for p in example_paths()]


def distance_to(edges: np.ndarray) -> np.ndarray:
    """Per pixel, the distance in px to the nearest ink of ``edges``."""
    return cv2.distanceTransform((edges >= 128).astype(np.uint8), cv2.DIST_L2, 5)


def line(length: int = 160, s: int = 256) -> np.ndarray:
    """A canvas (uint8 0/1) with one horizontal 3 px line, and its skeleton."""
    canvas = np.zeros((s, s), np.uint8)
    canvas[127:130, 48 : 48 + length] = 1
    skeleton = np.zeros((s, s), bool)
    skeleton[128, 49 : 48 + length - 1] = True
    return canvas, skeleton


def test_perturb_stays_close_stays_canonical_and_is_seeded():
    for edges in drawings():
        outs = [fh.perturb(edges, np.random.default_rng(s), STYLE) for s in range(4)]
        for out in outs:
            assert out.shape == edges.shape and out.dtype == np.uint8
            assert set(np.unique(out)) <= {0, 255}
            ink = out < 128
            # still in the canonical style: redrawing it changes almost nothing
            assert np.mean(canonical_lines(ink, STYLE)[ink] < 128) > 0.97
            # close to the drawing: ink within a few px of the original's, and most of it covered
            assert float(np.mean(distance_to(edges)[ink])) < 2.5
            assert float(np.mean(distance_to(out)[edges < 128] < 4)) > 0.85
            # but not the same drawing
            assert np.mean(ink != (edges < 128)) > 0.005
        assert not np.array_equal(outs[0], outs[1])
        np.testing.assert_array_equal(outs[0], fh.perturb(edges, np.random.default_rng(0), STYLE))


def test_blank_and_bad_maps():
    blank = np.full((64, 64), 255, np.uint8)
    np.testing.assert_array_equal(fh.perturb(blank, np.random.default_rng(0), LineStyle.for_size(64)), blank)
    with pytest.raises(ValueError, match="square uint8"):
        fh.perturb(np.zeros((64, 32), np.uint8), np.random.default_rng(0), STYLE)


def test_gaps_break_a_line():
    canvas, skeleton = line()
    fh._gaps(canvas, skeleton, np.random.default_rng(3), 1.0, 3)
    n_parts, _ = cv2.connectedComponents(canvas)
    assert n_parts - 1 >= 2  # background is label 0
    assert canvas.sum() < line()[0].sum()


def test_overshoot_runs_line_ends_on_along_the_line():
    grown = []
    for seed in range(8):
        canvas, skeleton = line()
        fh._overshoot(canvas, skeleton, np.random.default_rng(seed), 1.0, 3)
        cols = np.nonzero(canvas.any(0))[0]
        rows = np.nonzero(canvas.any(1))[0]
        grown.append((48 - cols[0]) + (cols[-1] - (48 + 159)))
        assert rows[0] >= 126 and rows[-1] <= 130  # along the line, not across it
    assert max(grown) >= 2 and max(grown) <= 16 and min(grown) >= 0


def test_doubled_strokes_add_a_nearby_copy():
    canvas, skeleton = line()
    before = canvas.copy()
    fh._double(canvas, skeleton, np.random.default_rng(1), 1.0)
    added = (canvas > 0) & (before == 0)
    assert added.sum() > 20
    assert distance_to(np.where(before > 0, 0, 255).astype(np.uint8))[added].max() <= 4.5


def test_wobble_bends_lines_by_a_few_pixels():
    canvas, _ = line()
    bent = fh._wobble(canvas, np.random.default_rng(0), 1.0)
    moved = distance_to(np.where(canvas > 0, 0, 255).astype(np.uint8))[bent > 0]
    assert 0 < moved.mean() < 3.5 and moved.max() < 8
    assert abs(int(bent.sum()) - int(canvas.sum())) < 0.3 * canvas.sum()  # bent, not erased


def test_batch_wrapper_draws_the_same_random_numbers_whatever_it_decides():
    a = torch.from_numpy(np.stack(drawings())).float().div(127.5).sub(1).unsqueeze(1).expand(-1, 3, -1, -1)
    states = []
    for p in (0.0001, 1.0):
        g = torch.Generator().manual_seed(5)
        out = fh.Freehand(STYLE, p)(a, g)
        states.append(g.get_state())
        changed = [(out[i] != a[i]).any().item() for i in range(len(a))]
        assert all(changed) if p == 1.0 else not any(changed)
        assert out.shape == a.shape and torch.equal(out[:, 0], out[:, 2])  # channels stay repeated
    assert torch.equal(states[0], states[1])
    assert fh.Freehand(STYLE, 0.0)(a, torch.Generator()) is a
    with pytest.raises(ValueError, match="line style"):
        fh.Freehand(None, 0.5)


def test_freehand_option_is_checked():
    with pytest.raises(ConfigError, match="freehand"):
        TrainConfig(freehand=1.5)


def test_fit_with_freehand_trains_and_records_it(data_dir, tmp_path):
    m = fit_mod.fit(tiny(data_dir, tmp_path, max_steps=3, freehand=1.0))
    assert m["steps"] == 3
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["freehand"] == 1.0


def test_fit_refuses_freehand_without_a_line_style(data_dir, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in data_dir.iterdir():
        plain.joinpath(f.name).write_bytes(f.read_bytes())
    manifest = json.loads((plain / "manifest.json").read_text())
    del manifest["line_style"]
    (plain / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="no.*line style|has none"):
        fit_mod.fit(tiny(plain, tmp_path, max_steps=1, freehand=0.5))


def test_evaluate_freehand_scores_the_hand_drawn_split(data_dir, tmp_path):
    m = fit_mod.fit(tiny(data_dir, tmp_path, max_steps=2))
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    clean = evaluate(str(ckpt), str(data_dir), out=str(tmp_path / "ev"), variety_seeds=1)
    hand = evaluate(str(ckpt), str(data_dir), out=str(tmp_path / "ev"), variety_seeds=1, freehand=True)
    assert hand["split"] == "test_freehand" and hand["freehand"] is True
    assert (tmp_path / "ev" / "metrics_test_freehand.json").is_file()
    assert (tmp_path / "ev" / "metrics_test.json").is_file()
    assert hand["l1"] != clean["l1"]  # other inputs, other outputs
    again = evaluate(str(ckpt), str(data_dir), out=str(tmp_path / "ev2"), variety_seeds=1, freehand=True)
    assert again["l1"] == hand["l1"]  # the hand-drawn split is the same every time
    assert m["steps"] == 2
    assert len(PairedData.load(data_dir, "test")) == hand["n"]
