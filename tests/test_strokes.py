"""Drawings as vectors: parsing the canvas' record, framing and redrawing, and the JS twin's pixels."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from p2p_demo import canvas, edges
from p2p_demo.edges import LineStyle, NothingDrawn, Strokes, normalize_strokes

JS = Path(__file__).resolve().parent.parent / "p2p_demo" / "static" / "p2p_strokes.js"


def random_record(rng: np.random.Generator, n_strokes: int = 6, eraser: bool = True) -> dict:
    strokes = []
    for i in range(n_strokes):
        n = int(rng.integers(1, 12))
        centre = rng.uniform(40, 216, 2)
        pts = centre + np.cumsum(rng.normal(0, 12, (n, 2)), 0)
        tool = "e" if eraser and i == n_strokes - 1 else "b"
        strokes.append({"t": tool, "w": 12 if tool == "e" else 3,
                        "p": [round(float(v), 2) for v in pts.clip(-20, 276).reshape(-1)]})
    return {"v": 1, "size": 256, "strokes": strokes}


def test_framing_follows_the_strokes_extent_with_the_margin():
    rec = {"v": 1, "size": 256, "strokes": [{"t": "b", "w": 3, "p": [100, 100, 140, 120]}]}
    x0, y0, x1, y1 = edges.strokes_box(Strokes.from_dict(rec), 0.06)
    side = 43 / 0.88  # the longer extent (40 + the pen) leaves 6 % blank on each side
    assert (x1 - x0, y1 - y0) == pytest.approx((side, side))
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx((120, 110))
    e = normalize_strokes(Strokes.from_dict(rec), LineStyle(size=256, stroke_width=3))
    cols = np.flatnonzero((e.image == 0).any(0))
    k = 256 / side  # output px per canvas px; the line's centre sits half the canvas pen inside the box
    assert cols[0] == pytest.approx(0.06 * 256 + 1.5 * k - 1.5, abs=1)  # the margin, left
    assert 255 - cols[-1] == pytest.approx(cols[0], abs=1)  # centred
    # A horizontal line is redrawn stroke_width px thick, whatever its size on the canvas.
    flat = Strokes.from_dict({"v": 1, "size": 256, "strokes": [{"t": "b", "w": 9, "p": [20, 100, 230, 100]}]})
    img = normalize_strokes(flat, LineStyle(size=256, stroke_width=3)).image
    assert set(((img == 0).sum(0))[20:230].tolist()) == {3}


def test_eraser_removes_ink_and_nothing_left_is_nothing_drawn():
    line = {"t": "b", "w": 3, "p": [50, 128, 200, 128]}
    cut = {"t": "e", "w": 12, "p": [125, 110, 125, 150]}
    full = normalize_strokes(Strokes.from_dict({"v": 1, "size": 256, "strokes": [line]})).image
    gap = normalize_strokes(Strokes.from_dict({"v": 1, "size": 256, "strokes": [line, cut]})).image
    assert (gap == 0).sum() < (full == 0).sum() - 20
    everything = {"t": "e", "w": 60, "p": [40, 128, 210, 128]}
    with pytest.raises(NothingDrawn):
        normalize_strokes(Strokes.from_dict({"v": 1, "size": 256, "strokes": [line, everything]}))
    with pytest.raises(NothingDrawn):
        normalize_strokes(Strokes.from_dict({"v": 1, "size": 256, "strokes": [cut]}))


@pytest.mark.parametrize("bad", [
    None, {"v": 2}, {"v": 1, "size": 256, "strokes": "x"},
    {"v": 1, "size": 256, "strokes": [{"t": "x", "w": 3, "p": [1, 2]}]},
    {"v": 1, "size": 256, "strokes": [{"t": "b", "w": 300, "p": [1, 2]}]},
    {"v": 1, "size": 256, "strokes": [{"t": "b", "w": 3, "p": [1, 2, 3]}]},
    {"v": 1, "size": 256, "strokes": [{"t": "b", "w": 3, "p": [1, "2"]}]},
    {"v": 1, "size": 256, "strokes": [{"t": "b", "w": 3, "p": [1, 1e9]}]},
    {"v": 1, "size": 256, "strokes": [{"t": "b", "w": 3, "p": [0.0, 1.0] * 60_000}]},
])
def test_malformed_records_are_refused_with_a_reason(bad):
    with pytest.raises(ValueError, match="stroke|point|drawing"):
        Strokes.from_dict(bad)


def png_with_strokes(record: dict | None, text: str | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    if record is not None or text is not None:
        info.add_text(canvas.STROKES_KEY, text if text is not None else json.dumps(record))
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), "white").save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def test_the_canvas_png_carries_the_strokes():
    rec = random_record(np.random.default_rng(0))
    got = canvas.strokes(png_with_strokes(rec))
    assert got == Strokes.from_dict(rec)
    assert canvas.strokes(png_with_strokes(None)) is None  # an example picture: raster pipeline
    with pytest.raises(canvas.CanvasError, match="strokes"):
        canvas.strokes(png_with_strokes(None, text="{not json"))


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_js_twin_draws_the_same_pixels(tmp_path):
    rng = np.random.default_rng(1)
    records = [random_record(rng, int(rng.integers(1, 9)), eraser=bool(i % 2)) for i in range(12)]
    styles = [dict(size=256, stroke_width=3, margin=0.06), dict(size=64, stroke_width=1, margin=0.1)]
    script = tmp_path / "t.mjs"
    script.write_text(f"""
import {{ edgeMap }} from {json.dumps(JS.as_uri())};
const records = {json.dumps(records)}, styles = {json.dumps(styles)};
const out = [];
for (const st of styles) for (const r of records) {{
  const e = edgeMap(r, st);
  out.push(e === null ? null : {{box: e.box, png: Buffer.from(e.image).toString('base64')}});
}}
console.log(JSON.stringify(out));
""")
    got = json.loads(subprocess.run(["node", str(script)], capture_output=True, text=True, check=True).stdout)
    assert sum(g is not None for g in got) >= 20
    i = 0
    for st in styles:
        for rec in records:
            if got[i] is None:  # nothing drawn (only an eraser stroke): Python says so too
                with pytest.raises(NothingDrawn):
                    normalize_strokes(Strokes.from_dict(rec), LineStyle(**st))
                i += 1
                continue
            want = normalize_strokes(Strokes.from_dict(rec), LineStyle(**st))
            js = np.frombuffer(base64.b64decode(got[i]["png"]), np.uint8).reshape(st["size"], st["size"])
            assert got[i]["box"][:2] == [pytest.approx(v, abs=0) for v in edges.strokes_box(
                Strokes.from_dict(rec), st["margin"])[:2]]
            assert np.array_equal(js, want.image), f"record {i}: {np.sum(js != want.image)} pixels differ"
            i += 1


def test_the_server_renders_a_drawing_of_strokes_from_its_vectors(tmp_path):
    from conftest import MODELS, make_weights

    from p2p_demo.service import ModelManager

    rec = random_record(np.random.default_rng(3), 4, eraser=False)
    manager = ModelManager(weights_dir=make_weights(tmp_path), default=MODELS[0])
    value = canvas.PREFIX + base64.b64encode(png_with_strokes(rec)).decode()  # a blank raster: vectors win
    out = manager.render_sketch(value, model_id=MODELS[0], n=2, seed=5)
    style = manager.renderer(MODELS[0]).line_style
    assert np.array_equal(out.edges, normalize_strokes(Strokes.from_dict(rec), style).image)
    assert "on the server" in out.status and len(out.samples) == 2
