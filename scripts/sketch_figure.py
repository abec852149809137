"""The README's sketch figure: six quick mouse drawings, drawn in the app's own canvas in Chromium,
through every bundled model, four seeds each.

    python scripts/sketch_figure.py [--out docs/figures/sketches.png] [--drawings docs/figures/sketches]
    python scripts/sketch_figure.py --from-drawings docs/figures/sketches   # no browser

1. Starts the real app in-process on 127.0.0.1 and opens it in Debian's Chromium (headless, the
   page rendering on the server: ``?render=server``, so every stroke reaches the server).
2. Draws each sketch stroke by stroke with the mouse (``bench.chromium.stroke``) and keeps the
   canvas value the app's server received for it: the PNG data URL the canvas sends, with the
   strokes as vectors in its ``p2p-strokes`` chunk (``p2p_demo.canvas``). That PNG is checked against
   the canvas' own pixels in the page and saved as it came (``--drawings``, one file per sketch).
3. Renders each drawing through every available bundled model of the registry with the app's own
   sketch path (``ModelManager.render_sketch``: the canvas value decoded, the strokes framed and
   redrawn in the model's line style), one picture per seed (``--seeds``, dropout on: what the app
   shows as its output for that seed).
4. Writes one figure: a row per sketch; the drawing, then each model's seeds under its name.

``--from-drawings DIR`` skips 1-2 and renders the PNGs saved earlier: the same pictures, since
the server reads exactly those bytes.
"""

from __future__ import annotations

import argparse
import base64
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.chromium import CHROMIUM, CHROMIUM_ARGS, circle, free_port, stroke  # noqa: E402
from p2p_demo import canvas, registry  # noqa: E402
from p2p_demo.image import grid, load_image, resize, save_image  # noqa: E402

log = logging.getLogger("sketch_figure")

SIZE = canvas.SIZE  # the sketches are in canvas pixels: x right, y down, 0..256
PAD = 4  # white between cells (p2p_demo.image.grid's gutter)
HEADER = 52  # px above the grid: a model's name, then its seeds
Polyline = list[tuple[float, float]]


def _box(x0: float, y0: float, x1: float, y1: float) -> Polyline:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]


# Six things a visitor might draw in a hurry with the mouse, one polyline per pen stroke, in the
# order a person would draw them. ``by_hand`` adds the wobble of a hand on a mouse.
SKETCHES: dict[str, list[Polyline]] = {
    "cat": [  # standing, side view, facing right
        circle(112, 150, 56, n=28, squash=0.55),  # body
        circle(172, 114, 28, n=24, start=2.2, end=2.2 + 2 * math.pi, squash=0.92),  # head
        [(150, 100), (152, 72), (168, 90)], [(178, 88), (194, 68), (198, 100)],  # ears
        circle(162, 110, 3.5, n=8), circle(183, 110, 3.5, n=8),  # eyes
        [(169, 120), (176, 120), (172.5, 125), (169, 120)],  # nose
        [(172.5, 125), (172.5, 130), (166, 133)], [(172.5, 130), (179, 133)],  # mouth
        [(184, 122), (220, 114)], [(184, 127), (220, 132)],  # whiskers
        [(148, 176), (148, 214), (160, 214), (160, 174)], [(124, 180), (124, 216), (136, 216), (136, 181)],  # legs
        [(70, 170), (68, 210), (80, 210), (84, 177)], [(92, 178), (92, 214), (104, 214), (104, 181)],
        [(58, 142), (42, 132), (32, 114), (30, 92), (38, 76), (48, 72)],  # tail
    ],
    "sneaker": [  # side view, toe right
        [(40, 170), (38, 136), (44, 110), (56, 98), (72, 104), (88, 112), (102, 104), (110, 90), (120, 82),
         (130, 86), (138, 100), (160, 118), (190, 134), (214, 142), (230, 152), (236, 168)],  # upper
        [(32, 170), (236, 170), (242, 180), (234, 192), (42, 194), (30, 186), (32, 170)],  # sole
        [(38, 182), (238, 182)],  # its tread line
        [(132, 112), (146, 92)], [(144, 120), (158, 100)], [(157, 128), (170, 108)], [(170, 136), (182, 116)],  # laces
        [(62, 156), (96, 146), (132, 128), (108, 150), (76, 160)],  # side stripe
        [(198, 170), (204, 152), (222, 148)],  # toe cap
        [(46, 112), (52, 140), (44, 168)],  # heel counter
    ],
    "boot": [  # a tall boot, side view, toe right
        [(80, 24), (82, 90), (84, 150), (80, 196), (232, 196), (232, 180), (224, 166), (204, 156), (170, 146),
         (144, 132), (136, 96), (134, 24), (80, 24)],  # outline
        [(80, 196), (80, 214), (118, 214), (120, 197)],  # heel
        [(118, 206), (228, 206), (234, 197)],  # sole
        [(82, 40), (134, 40)],  # cuff
        [(126, 48), (128, 126)],  # zip
        [(192, 152), (198, 168), (214, 176)],  # toe cap
    ],
    "house": [
        [(62, 118), (62, 218), (194, 218), (194, 118)],  # walls
        [(46, 126), (128, 50), (210, 126), (46, 126)],  # roof
        [(110, 218), (110, 168), (142, 168), (142, 218)],  # door
        circle(134, 194, 2.5, n=6),  # its knob
        _box(74, 136, 100, 160), [(87, 136), (87, 160)], [(74, 148), (100, 148)],  # windows
        _box(156, 136, 182, 160), [(169, 136), (169, 160)], [(156, 148), (182, 148)],
        [(158, 84), (158, 58), (176, 58), (176, 100)],  # chimney
    ],
    "face": [
        circle(128, 134, 74, n=40, start=-math.pi / 2, end=1.5 * math.pi, squash=1.18),  # head
        [(56, 118), (58, 84), (78, 56), (108, 44), (146, 44), (178, 56), (198, 84), (200, 118)],  # hair
        [(60, 98), (80, 76), (96, 92), (114, 70), (132, 90), (150, 70), (168, 90), (196, 86)],  # fringe
        [(86, 112), (100, 106), (114, 112)], [(142, 112), (156, 106), (170, 112)],  # eyebrows
        circle(100, 126, 10, n=14, squash=0.6), circle(156, 126, 10, n=14, squash=0.6),  # eyes
        circle(100, 126, 2.5, n=6), circle(156, 126, 2.5, n=6),  # pupils
        [(128, 130), (120, 158), (132, 160)],  # nose
        circle(128, 166, 26, n=14, start=0.35, end=math.pi - 0.35, squash=0.7),  # smile
        circle(54, 136, 12, n=10, start=math.pi / 2, end=1.5 * math.pi),  # ears
        circle(202, 136, 12, n=10, start=-math.pi / 2, end=math.pi / 2),
    ],
    "car": [  # side view, front right
        [(52, 168), (28, 168), (26, 142), (40, 132), (70, 128), (90, 100), (108, 92), (160, 92), (184, 104),
         (204, 126), (226, 132), (234, 148), (232, 168), (216, 168)],  # body
        [(98, 168), (172, 168)],  # sill between the wheels
        circle(75, 170, 22, n=20), circle(194, 170, 22, n=20),  # wheels
        circle(75, 170, 7, n=8), circle(194, 170, 7, n=8),  # hubs
        [(96, 126), (106, 102), (134, 100), (134, 126), (96, 126)],  # windows
        [(142, 100), (160, 100), (186, 126), (142, 126)],
        [(138, 128), (138, 164)], [(148, 138), (160, 138)],  # door, handle
        circle(222, 142, 4.5, n=8),  # headlight
    ],
}


def by_hand(points: Sequence[tuple[float, float]], rng: np.random.Generator, step: float = 7.0,
            wobble: float = 1.0) -> Polyline:
    """A polyline as a hand on a mouse draws it: resampled every ``step`` px, each point moved by a
    smooth random offset of about ``wobble`` px."""
    p = np.asarray(points, np.float64)
    seg = np.hypot(*np.diff(p, axis=0).T)
    at = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(2, int(math.ceil(at[-1] / step)) + 1)
    t = np.linspace(0.0, at[-1], n)
    q = np.stack([np.interp(t, at, p[:, 0]), np.interp(t, at, p[:, 1])], 1)
    if n > 2:
        noise = rng.normal(0.0, 1.0, (n + 4, 2))
        smooth = np.stack([np.convolve(noise[:, i], np.ones(5) / 5, mode="valid") for i in range(2)], 1)[:n]
        q += wobble * smooth / smooth.std()
    return [(float(x), float(y)) for x, y in np.clip(q, 2, SIZE - 2)]


def hand_drawn(name: str) -> list[Polyline]:
    """The strokes of one sketch with a fixed hand (seeded by the sketch's name)."""
    rng = np.random.default_rng(list(SKETCHES).index(name))
    return [by_hand(s, rng) for s in SKETCHES[name]]


# ---------------------------------------------------------------------------------------------
# Drawing in the app


def draw_in_app(demo: Any, names: Sequence[str], timeout_s: float = 120.0) -> dict[str, bytes]:
    """Each sketch drawn with the mouse in the running app (``demo``); the canvas PNG its server got."""
    from playwright.sync_api import sync_playwright

    from p2p_demo import gradio_glue as glue

    manager = glue.browser_models(demo).manager
    received: list[Any] = []
    render_sketch = manager.render_sketch

    def keep(value, **kwargs):  # the app's handler calls this with the canvas value as it arrived
        received.append(value)
        return render_sketch(value, **kwargs)

    manager.render_sketch = keep
    out: dict[str, bytes] = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.set_default_timeout(60_000)
            page.goto(demo.local_url + "?render=server")  # strokes go to the server, one value per stroke
            box = page.locator("#samples input[type=number]")  # one sample per live render: less CPU
            box.fill("1")
            box.press("Enter")
            page.get_by_role("button", name="Brush", exact=True).click()
            where = page.locator("#sketch canvas").first.bounding_box()
            for name in names:
                strokes = hand_drawn(name)
                if name != names[0]:
                    page.locator("#sketch [data-act=clear]").click()
                t0 = time.perf_counter()
                for points in strokes:
                    stroke(page, where, [(x / SIZE, y / SIZE) for x, y in points])
                png = _wait_for_drawing(page, received, len(strokes), timeout_s)
                in_page = page.evaluate("() => document.querySelector('#sketch canvas').toDataURL('image/png')")
                if not np.array_equal(load_image(png), load_image(base64.b64decode(in_page.split(",", 1)[1]))):
                    raise RuntimeError(f"{name}: the PNG the server got is not the canvas' picture")
                log.info("%s: %d strokes drawn and received in %.1f s", name, len(strokes), time.perf_counter() - t0)
                out[name] = png
            browser.close()
    finally:
        manager.render_sketch = render_sketch
    return out


def _wait_for_drawing(page: Any, received: list[Any], n_strokes: int, timeout_s: float) -> bytes:
    """The first canvas value the server gets that holds all n strokes (strokes of one sketch only:
    the canvas was cleared before)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        while received:
            png = canvas.decode(received.pop(0))
            vectors = canvas.strokes(png) if png is not None else None
            if vectors is not None and len(vectors.strokes) == n_strokes:
                received.clear()
                return png
        page.wait_for_timeout(200)
    raise TimeoutError(f"the server did not receive a drawing of {n_strokes} strokes in {timeout_s:.0f} s")


# ---------------------------------------------------------------------------------------------
# Rendering and the figure


def bundled_models(weights_dir: Path | None) -> list[Any]:
    models = [m for m in registry.list_models(weights_dir) if m.source == "bundled" and m.available]
    if not models:
        raise SystemExit(f"error: no bundled model is installed in {weights_dir or registry.WEIGHTS_DIR}")
    return models


def render_all(manager: Any, drawings: dict[str, bytes], model_ids: Sequence[str],
               seeds: Sequence[int]) -> dict[tuple[str, str], list[np.ndarray]]:
    """(sketch, model) -> one picture per seed, through the app's own sketch path."""
    out: dict[tuple[str, str], list[np.ndarray]] = {}
    for model_id in model_ids:  # model by model: the manager keeps only a few loaded
        for name, png in drawings.items():
            value = canvas.PREFIX + base64.b64encode(png).decode("ascii")
            out[name, model_id] = [resize(manager.render_sketch(value, model_id=model_id, n=1, seed=s).image, SIZE)
                                   for s in seeds]
    return out


def _font(size: int):
    from PIL import ImageFont

    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                 "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf"):
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def figure(drawings: dict[str, bytes], pictures: dict[tuple[str, str], list[np.ndarray]],
           models: Sequence[tuple[str, str]], seeds: Sequence[int]) -> np.ndarray:
    """Rows: sketches. Columns: the drawing, then per model (id, title) one picture per seed."""
    from PIL import Image, ImageDraw

    rows = [[load_image(png)] + [pic for model_id, _ in models for pic in pictures[name, model_id]]
            for name, png in drawings.items()]
    body = grid(rows, pad=PAD)
    img = Image.new("RGB", (body.shape[1], HEADER + body.shape[0]), "white")
    img.paste(Image.fromarray(body), (0, HEADER))
    ink = ImageDraw.Draw(img)
    big, small = _font(20), _font(13)
    cell = SIZE + PAD

    def centred(text: str, x0: float, x1: float, y: float, font: Any, fill: str) -> None:
        ink.text(((x0 + x1) / 2, y), text, font=font, fill=fill, anchor="mt")

    centred("drawing (canvas)", PAD, cell, 28, small, "#444")
    for i, (_, title) in enumerate(models):
        x0 = PAD + (1 + i * len(seeds)) * cell
        x1 = x0 + len(seeds) * cell - PAD
        centred(title, x0, x1, 4, big, "black")
        ink.line([(x0, 28), (x1, 28)], fill="#999", width=1)
        for k, s in enumerate(seeds):
            centred(f"seed {s}", x0 + k * cell, x0 + k * cell + SIZE, 32, small, "#444")
    return np.asarray(img)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "sketches.png")
    ap.add_argument("--drawings", type=Path, default=None,
                    help="where the drawings captured in the browser are saved (default: beside --out, "
                         "a folder named after it)")
    ap.add_argument("--from-drawings", type=Path, default=None, metavar="DIR",
                    help="render the drawings saved in DIR (<sketch>.png); no browser")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--weights-dir", type=Path, default=None, help="(default: the repo's weights/)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    models = bundled_models(args.weights_dir)
    names = list(SKETCHES)
    t0 = time.perf_counter()
    if args.from_drawings is not None:
        from p2p_demo.service import ModelManager

        missing = [n for n in names if not (args.from_drawings / f"{n}.png").is_file()]
        if missing:
            raise SystemExit(f"error: no drawing of {', '.join(missing)} in {args.from_drawings}")
        drawings = {n: (args.from_drawings / f"{n}.png").read_bytes() for n in names}
        manager = ModelManager(weights_dir=args.weights_dir, default=models[0].id)
    else:
        import app
        from p2p_demo import gradio_glue as glue

        demo = app.build_app(args.weights_dir, default_model=models[0].id)
        glue.launch(demo, server_name="127.0.0.1", server_port=free_port(),
                    prevent_thread_lock=True, quiet=True)
        try:
            drawings = draw_in_app(demo, names)
        finally:
            demo.close()
        manager = glue.browser_models(demo).manager
        folder = args.drawings or args.out.with_suffix("")
        folder.mkdir(parents=True, exist_ok=True)
        for name, png in drawings.items():
            (folder / f"{name}.png").write_bytes(png)  # the bytes as the server got them, strokes chunk included
        print(f"drew {len(names)} sketches in Chromium in {time.perf_counter() - t0:.0f} s; saved in {folder}")
    t1 = time.perf_counter()
    pictures = render_all(manager, drawings, [m.id for m in models], args.seeds)
    titles = [(m.id, m.name if manager.renderer(m.id).sampled() else f"{m.name} (no dropout)") for m in models]
    save_image(figure(drawings, pictures, titles, args.seeds), args.out)
    print(f"rendered {len(names)} sketches x {len(models)} model(s) ({', '.join(m.id for m in models)}) "
          f"x {len(args.seeds)} seeds in {time.perf_counter() - t1:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
