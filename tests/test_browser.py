"""The real app in Debian's Chromium (Playwright): draw, see samples, examples, photo, model switch.

Needs /usr/bin/chromium (scripts/test.sh installs it); skipped when it or Playwright is missing.
The screenshot goes under pytest's tmp dir (tiny random models; the README's pictures with the real
models come from ``python -m bench.app_latency --screenshot docs/screenshots/app-<model>.png``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import make_weights, running_app, serve

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
TIMEOUT_MS = 60_000  # generous: CI machines are often busy; a passing run takes far less

playwright_sync = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    # 256 px models (the real models' size), so the screenshot shows what a visitor sees.
    with serve(make_weights(tmp_path_factory.mktemp("weights"), size=256)) as u:
        yield u


@pytest.fixture()
def page(url, tmp_path):
    """The server-rendering page (?render=server): this test is about the server's flows; the browser
    renderer has its own test below."""
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.set_default_timeout(TIMEOUT_MS)
        page.requests = []  # every URL the page asks for
        page.on("request", lambda r: page.requests.append(r.url))
        page.goto(url + "?render=server")
        try:
            yield page
        finally:
            page.screenshot(path=str(tmp_path / "last.png"), full_page=True)  # for a failing run
            browser.close()


def draw(page, points: list[tuple[float, float]]) -> None:
    """One stroke through points given as fractions of the canvas (~8 mouse steps in all)."""
    box = page.locator("#sketch canvas").first.bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for (x0, y0), (x1, y1) in zip(xy, xy[1:]):
        page.mouse.move(x1, y1, steps=max(1, 8 // (len(xy) - 1)))
    page.mouse.up()


def src(page, selector: str) -> str | None:
    loc = page.locator(f"{selector} img")
    return loc.first.get_attribute("src") if loc.count() else None


def wait_src_change(page, selector: str, old: str | None) -> str:
    page.wait_for_function(
        "([sel, old]) => { const i = document.querySelector(sel + ' img'); return i && i.src && i.src !== old; }",
        arg=[selector, old])
    return src(page, selector)


def ink(page) -> int:
    """Dark pixels on the canvas' paper."""
    return page.evaluate("""() => {
        const c = document.querySelector('#sketch canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] < 128) n++;
        return n;
    }""")


def status(page) -> str:
    return page.locator("#status").inner_text()


def gallery_digests(page, n: int) -> list[str]:
    """Wait for n gallery thumbnails and return the hashes of their pixels' files."""
    page.wait_for_function("n => document.querySelectorAll('#gallery img').length === n", arg=n)
    srcs = [img.get_attribute("src") for img in page.locator("#gallery img").all()]
    return [hashlib.sha1(page.request.get(s).body()).hexdigest() for s in srcs]


def test_draw_examples_photo_and_models(page, tmp_path):
    page.get_by_role("button", name="Brush", exact=True).click()

    # A stroke renders: the output, the edge map and 3 distinct samples appear.
    draw(page, [(0.25, 0.3), (0.5, 0.7), (0.75, 0.3)])
    out1 = wait_src_change(page, "#output", None)
    assert src(page, "#edges")
    assert len(set(gallery_digests(page, 3))) == 3
    # The status of the last step of the render ("sample 1 of 3" comes first): the gallery may show before it.
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('3 samples, seed 0')")

    # More samples: the slider's number box.
    box = page.locator("#samples input[type=number]")
    box.fill("4")
    box.press("Enter")
    assert len(set(gallery_digests(page, 4))) == 4

    # Clearing the canvas is not an error: a calm hint, no toast. Undo brings the drawing back.
    page.locator("#sketch").get_by_role("button", name="Clear canvas").click()
    page.wait_for_function("() => !document.querySelector('#output img')")
    assert status(page).startswith("✏️ Draw on the canvas")
    assert page.locator("[data-testid='toast-text']").count() == 0
    assert ink(page) == 0
    page.locator("#sketch").get_by_role("button", name="Undo").click()
    wait_src_change(page, "#output", None)
    assert ink(page) > 100

    # The eraser takes ink away, and the picture follows.
    before = ink(page)
    old = src(page, "#output")
    page.get_by_role("button", name="Eraser", exact=True).click()
    draw(page, [(0.2, 0.3), (0.8, 0.3), (0.8, 0.7), (0.2, 0.7)])
    wait_src_change(page, "#output", old)
    assert ink(page) < before
    page.get_by_role("button", name="Brush", exact=True).click()

    # An example replaces the drawing on the canvas and renders.
    erased = src(page, "#output")
    page.locator("#examples button.gallery-item").first.click()
    out2 = wait_src_change(page, "#output", erased)
    assert out2 != out1
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('4 samples')")
    assert ink(page) > 1000  # the cat's lines, painted onto the paper
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('4 samples')")
    page.wait_for_function("() => [...document.querySelectorAll('#output img, #edges img, #gallery img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    shot = tmp_path / "app.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000

    # Another model re-renders the same drawing.
    page.locator("#model input").click()
    page.get_by_role("option", name="Tiny shoes").click()
    page.wait_for_function("() => document.querySelector('#model-info').innerText.includes('Tiny shoes')")
    out3 = wait_src_change(page, "#output", out2)
    page.wait_for_function("() => document.querySelector('#status').innerText.startsWith('Tiny shoes')")

    # A Hub model that cannot be downloaded: a warning, and the current model stays.
    page.locator("#model input").click()
    page.get_by_role("option", name="Offline model", exact=False).click()
    page.get_by_text("Could not download Offline model").first.wait_for()
    page.wait_for_function("() => document.querySelector('#model input').value === 'Tiny shoes'")
    assert "Tiny shoes" in page.locator("#model-info").inner_text()

    # The photo tab: upload, edges, render.
    page.get_by_role("tab", name="Photo").click()
    photo = tmp_path / "photo.png"
    _synthetic_photo(photo)
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    wait_src_change(page, "#output", out3)
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Tiny shoes')")
    assert len(set(gallery_digests(page, 4))) == 4

    # A bad upload: an error toast, and the next upload renders again.
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    page.locator("#photo").get_by_role("button", name="Remove Image").click()
    page.locator("#photo input[type=file]").set_input_files(str(bad))
    page.get_by_text("Cannot use this file").first.wait_for()
    page.locator("#photo").get_by_role("button", name="Remove Image").click()
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    wait_src_change(page, "#output", None)

    hosts = {urlparse(u).hostname for u in page.requests if urlparse(u).scheme in ("http", "https", "ws", "wss")}
    assert hosts <= LOCAL_HOSTS, f"the page reached out to {hosts - LOCAL_HOSTS}"


def _synthetic_photo(path: Path) -> None:
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:240, 0:320]
    img = np.stack([xx * 0.5 + 40, yy * 0.6 + 60, 150 + 0 * xx], -1)
    img[(xx - 160) ** 2 / 2 + (yy - 120) ** 2 < 70**2] = [190, 70, 50]
    Image.fromarray(img.astype(np.uint8)).save(path)


# ---------------------------------------------------------------------------------------------
# Rendering in the browser: the same pictures as the server, for the same strokes and seed.

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
# ONNX Runtime Web (WASM, fp32) against ONNX Runtime on the server: the same graph and inputs,
# different kernels; float rounding may flip a pixel's last level, rarely more.
MAX_LEVELS, MEAN_LEVELS = 4, 0.5


def serving(weights: Path, model: str):
    """The real app with the browser renderer (conftest.running_app), or a skip without its runtime."""
    from p2p_demo import webrt

    if not webrt.available():
        pytest.skip("ONNX Runtime Web is not installed (python -m p2p_demo fetch-web-runtime; scripts/test.sh does it)")
    return running_app(weights, model)


@pytest.fixture(scope="module")
def openmoji_app():
    """The real app serving the bundled OpenMoji model (the one visitors draw with)."""
    with serving(WEIGHTS, "openmoji") as demo:
        yield demo


@pytest.fixture(scope="module")
def resize_channel_app(tmp_path_factory):
    """The real app serving a random model with the other decoder and dropout kinds: a resize-conv
    decoder (its ONNX file folds 3x3 weights into transposed kernels at load) and channel dropout
    (one mask value per feature map), stored as fp16 like the bundled models."""
    import json

    import torch

    from conftest import trained_like
    from p2p_demo.edges import LineStyle
    from p2p_demo.hub import save_pretrained
    from p2p_demo.nets import GeneratorConfig

    # far from init, so the picture has contrast and every mask shows
    g = trained_like(GeneratorConfig(ngf=8, num_downs=6, upsample="resize", channel_dropout=True, dropout_levels=4,
                                     in_channels=1, norm="instance"), std=0.15)
    root = tmp_path_factory.mktemp("weights")
    save_pretrained(g, root / "tiny-resize", line_style=LineStyle(size=256, stroke_width=3), name="Tiny resize",
                    description="A random model for tests", expects="black lines on white", license="MIT",
                    dtype=torch.float16)
    (root / "registry.json").write_text(json.dumps({"models": [{"id": "tiny-resize", "source": "bundled",
                                                                "folder": "tiny-resize"}]}))
    with serving(root, "tiny-resize") as demo:
        yield demo


def browser_settled(page) -> dict:
    """Wait until the browser renderer is idle after a final frame; its last frame's pixels and inputs."""
    page.wait_for_function("() => p2pBrowser.idle() && p2pBrowser.last && p2pBrowser.last.kind === 'final'")
    return page.evaluate("""() => {
        const l = p2pBrowser.last;
        return {output: Array.from(l.output.data), edges: Array.from(l.edges),
                samples: l.samples.map(s => Array.from(s.data)), record: p2pBrowser.canvas.record(),
                key: JSON.parse(l.key), status: document.querySelector('#p2p-status').innerText,
                frames: p2pBrowser.frames.length};
    }""")


def rgb(flat: list[int], size: int = 256):
    import numpy as np

    return np.asarray(flat, np.uint8).reshape(size, size, 4)[..., :3]


def assert_same_picture(browser, server) -> None:
    import numpy as np

    diff = np.abs(browser.astype(int) - server.astype(int))
    print(f"browser vs server: max |diff| {diff.max()}, mean {diff.mean():.4f}")
    assert server.std() > 5  # a picture, not a flat field
    assert diff.max() <= MAX_LEVELS and diff.mean() <= MEAN_LEVELS, (diff.max(), diff.mean())


def test_the_browser_renders_the_servers_pictures(openmoji_app, tmp_path):
    import numpy as np

    from p2p_demo import gradio_glue as glue
    from p2p_demo.edges import Strokes

    manager = glue.browser_models(openmoji_app).manager
    renderer = manager.renderer("openmoji")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.set_default_timeout(TIMEOUT_MS)
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        codings: dict[str, str | None] = {}  # the runtime's binary and the model: how they travelled
        page.on("response", lambda r: codings.__setitem__(r.url.rsplit(".", 1)[-1], r.headers.get("content-encoding"))
                if r.url.endswith((".wasm", ".onnx")) else None)
        page.goto(openmoji_app.local_url)
        try:
            page.wait_for_function("() => window.p2pBrowser && p2pBrowser.mode === 'browser'")
            assert page.evaluate("() => crossOriginIsolated")  # COOP/COEP: WASM threads allowed
            assert codings == {"wasm": "br", "onnx": "br"}  # Chromium offers brotli on localhost
            # A face: the outline, then two eyes; the server gets no request while the browser renders.
            before = len(requests)
            draw(page, [(0.3, 0.25), (0.7, 0.25), (0.75, 0.7), (0.5, 0.85), (0.25, 0.7), (0.3, 0.25)])
            draw(page, [(0.4, 0.45), (0.42, 0.47)])
            draw(page, [(0.6, 0.45), (0.62, 0.47)])
            got = browser_settled(page)
            assert not [u for u in requests[before:] if "/gradio_api/" in u], "a stroke reached the server"
            assert got["frames"] >= 4  # live frames while drawing, and the final ones
            assert "in your browser, WASM" in got["status"] and "3 samples, seed 0" in got["status"]

            # The server's render of the same strokes and seed: the edge map pixel for pixel, the pictures
            # within float rounding.
            strokes = Strokes.from_dict(got["record"])
            server_edges = renderer.make_edges(strokes)
            assert np.array_equal(np.asarray(got["edges"], np.uint8).reshape(256, 256), server_edges)
            server = renderer.generate(server_edges, n=3, seed=0)
            assert len(got["samples"]) == 3
            for b, s in zip(got["samples"], server):
                assert_same_picture(rgb(b), s)
            assert_same_picture(rgb(got["output"]), server[0])
            assert np.abs(rgb(got["samples"][1]).astype(int) - server[0]).max() > 20  # samples differ

            # Another seed and sample count, typed into the controls: rendered in the browser too.
            seed = page.locator("#seed input")
            seed.fill("7")
            seed.press("Enter")
            box = page.locator("#samples input[type=number]")
            box.fill("2")
            box.press("Enter")
            page.wait_for_function("() => p2pBrowser.last && JSON.parse(p2pBrowser.last.key).seed === 7 "
                                   "&& JSON.parse(p2pBrowser.last.key).n === 2")
            got = browser_settled(page)
            server = renderer.generate(server_edges, n=2, seed=7)
            for b, s in zip(got["samples"], server, strict=True):
                assert_same_picture(rgb(b), s)

            # An example is a picture, not strokes: the server renders it, and the page says so.
            page.locator("#examples button.gallery-item").first.click()
            page.wait_for_function("() => p2pBrowser.mode === 'server'")
            wait_src_change(page, "#output", None)
            assert page.locator("#output").is_visible() and not page.locator("#p2p-output").is_visible()
            assert "example" in page.locator("#sketch .p2p-note").inner_text()
            page.wait_for_function("() => document.querySelector('#status').innerText.includes('on the server')")
        finally:
            page.screenshot(path=str(tmp_path / "browser-render.png"), full_page=True)  # for a failing run
            browser.close()
    hosts = {urlparse(u).hostname for u in requests if urlparse(u).scheme in ("http", "https", "ws", "wss")}
    assert hosts <= LOCAL_HOSTS, f"the page reached out to {hosts - LOCAL_HOSTS}"


def test_a_resize_decoder_with_four_channel_dropout_levels_renders_the_servers_pictures(resize_channel_app, tmp_path):
    import numpy as np

    from p2p_demo import gradio_glue as glue
    from p2p_demo.edges import Strokes
    from p2p_demo.masks import DropoutPlan

    renderer = glue.browser_models(resize_channel_app).manager.renderer("tiny-resize")
    config = renderer.generator.config
    assert config.upsample == "resize" and config.channel_dropout and config.dropout_levels == 4
    assert len(DropoutPlan.of(renderer.generator)) == 4  # the reference's levels at this depth: 1
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(resize_channel_app.local_url)
        try:
            page.wait_for_function("() => window.p2pBrowser && p2pBrowser.mode === 'browser'")
            draw(page, [(0.3, 0.25), (0.7, 0.25), (0.75, 0.7), (0.5, 0.85), (0.25, 0.7), (0.3, 0.25)])
            got = browser_settled(page)
            assert "in your browser, WASM" in got["status"]
            edges = renderer.make_edges(Strokes.from_dict(got["record"]))
            assert np.array_equal(np.asarray(got["edges"], np.uint8).reshape(256, 256), edges)
            server = renderer.generate(edges, n=3, seed=0)
            for b, s in zip(got["samples"], server, strict=True):
                assert_same_picture(rgb(b), s)
            # whole maps dropped: the samples differ over areas, not in a few pixels
            assert np.mean(np.abs(server[1].astype(int) - server[0].astype(int)) > 8) > 0.05
        finally:
            page.screenshot(path=str(tmp_path / "browser-resize.png"), full_page=True)  # for a failing run
            browser.close()
