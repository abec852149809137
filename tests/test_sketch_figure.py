"""scripts/sketch_figure.py: the sketches stay on the canvas, and --from-drawings renders saved canvas
PNGs through every bundled model with the app's own sketch path, into a figure of the promised layout."""

from __future__ import annotations

import base64
import io
import json

import cv2
import numpy as np
from PIL import Image, PngImagePlugin

from conftest import MODELS, make_weights
from p2p_demo import canvas
from p2p_demo.image import resize
from p2p_demo.service import ModelManager
from scripts import sketch_figure as sf


def canvas_png(strokes: list[list[tuple[float, float]]]) -> bytes:
    """What the canvas sends for these pen strokes: the picture, and the strokes as vectors."""
    img = np.full((canvas.SIZE, canvas.SIZE, 3), 255, np.uint8)
    for s in strokes:
        cv2.polylines(img, [np.round(np.asarray(s)).astype(np.int32).reshape(-1, 1, 2)], False, (0, 0, 0), 3)
    record = {"v": 1, "size": canvas.SIZE,
              "strokes": [{"t": "b", "w": 3, "p": [round(c, 2) for xy in s for c in xy]} for s in strokes]}
    info = PngImagePlugin.PngInfo()
    info.add_text(canvas.STROKES_KEY, json.dumps(record))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def test_every_sketch_is_several_strokes_inside_the_canvas():
    assert list(sf.SKETCHES) == ["cat", "sneaker", "boot", "house", "face", "car"]
    for name in sf.SKETCHES:
        strokes = sf.hand_drawn(name)
        assert len(strokes) >= 5, name
        pts = np.concatenate([np.asarray(s) for s in strokes])
        assert pts.min() >= 0 and pts.max() <= canvas.SIZE, name
        assert np.ptp(pts, axis=0).min() > canvas.SIZE / 3, f"{name} is drawn too small"
        assert sf.hand_drawn(name) == strokes  # the same hand every run


def test_from_drawings_renders_each_bundled_model_and_seed(tmp_path):
    weights = make_weights(tmp_path / "weights", size=64)  # two tiny bundled models and a Hub entry
    drawings = tmp_path / "drawings"
    drawings.mkdir()
    pngs = {name: canvas_png(sf.hand_drawn(name)) for name in sf.SKETCHES}
    for name, png in pngs.items():
        (drawings / f"{name}.png").write_bytes(png)
    out = tmp_path / "figure.png"
    assert sf.main(["--from-drawings", str(drawings), "--weights-dir", str(weights), "--out", str(out),
                    "--seeds", "0", "3"]) == 0

    fig = np.asarray(Image.open(out).convert("RGB"))
    cell = sf.SIZE + sf.PAD
    cols = 1 + len(MODELS) * 2  # the drawing, then two seeds per bundled model (not the Hub one)
    assert fig.shape == (sf.HEADER + len(pngs) * cell + sf.PAD, cols * cell + sf.PAD, 3)

    def at(row: int, col: int) -> np.ndarray:
        y, x = sf.HEADER + sf.PAD + row * cell, sf.PAD + col * cell
        return fig[y : y + sf.SIZE, x : x + sf.SIZE]

    manager = ModelManager(weights_dir=weights)
    house = list(pngs).index("house")
    value = canvas.PREFIX + base64.b64encode(pngs["house"]).decode()
    assert np.array_equal(at(house, 0), np.asarray(Image.open(io.BytesIO(pngs["house"])).convert("RGB")))
    for m, model_id in enumerate(MODELS):
        for k, seed in enumerate((0, 3)):
            want = resize(manager.render_sketch(value, model_id=model_id, n=1, seed=seed).image, sf.SIZE)
            assert np.array_equal(at(house, 1 + 2 * m + k), want), (model_id, seed)
    assert not np.array_equal(at(house, 1), at(house, 2))  # dropout on: seeds differ
