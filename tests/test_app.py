"""The app's public API (/render) through gradio_client, and the service behind it.

The app runs in-process on 127.0.0.1 with two tiny seeded models written to a temporary weights
folder (plus a Hub entry that cannot be downloaded, as when offline).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from p2p_demo.service import EMPTY_SKETCH, ModelManager, UserMessage

from conftest import CAT, MODELS, OFFLINE, SIZE, diff, make_weights, render, serve

# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def client(weights):
    from gradio_client import Client

    with serve(weights) as url:
        yield Client(url, verbose=False)


@pytest.fixture(scope="module")
def manager(weights):
    return ModelManager(weights_dir=weights, default=MODELS[0])


# ---------------------------------------------------------------------------------------------
# The API


def test_render_is_the_only_public_endpoint(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert list(api["named_endpoints"]) == ["/render"]
    params = [p["parameter_name"] for p in api["named_endpoints"]["/render"]["parameters"]]
    assert params == ["image", "model", "n", "seed", "deterministic", "edges"]
    assert api["unnamed_endpoints"] == {}


def test_render_a_drawing(client):
    out = render(client, CAT, n=3, seed=7)
    assert out["image"].shape == (SIZE, SIZE, 3) and out["image"].dtype == np.uint8
    assert len(out["samples"]) == 3 and all(s.shape == (SIZE, SIZE, 3) for s in out["samples"])
    # the main output (PNG) is sample 0 (a JPEG preview in the gallery)
    assert diff(out["image"], out["samples"][0]) < min(diff(out["image"], s) for s in out["samples"][1:])
    # the edge map is the drawing in the canonical style: black lines on white, some ink
    assert out["edges"].shape[:2] == (SIZE, SIZE)
    ink = (out["edges"] if out["edges"].ndim == 2 else out["edges"][..., 0]) < 128
    assert 0.02 < ink.mean() < 0.5
    t = out["timings"]
    assert t["model_id"] == MODELS[0] and t["n"] == 3 and t["seed"] == 7
    assert 0 < t["model"] <= t["total"] <= t["request"]
    assert "3 samples, seed 7" in out["status"]


def test_samples_differ_and_seed_reproduces(client):
    a = render(client, CAT, n=3, seed=11)
    b = render(client, CAT, n=3, seed=11)
    c = render(client, CAT, n=3, seed=12)
    for i in range(3):
        assert np.array_equal(a["samples"][i], b["samples"][i])
        assert diff(a["samples"][i], c["samples"][i]) > 0.5
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        assert diff(a["samples"][i], a["samples"][j]) > 0.5


def test_deterministic_gives_one_image_whatever_the_seed(client):
    a = render(client, CAT, n=4, seed=1, deterministic=True)
    b = render(client, CAT, n=4, seed=2, deterministic=True)
    assert len(a["samples"]) == 1 and np.array_equal(a["image"], b["image"])
    assert "deterministic" in a["status"]


def test_models_differ(client):
    a = render(client, CAT, model=MODELS[0], deterministic=True)
    b = render(client, CAT, model=MODELS[1], deterministic=True)
    assert diff(a["image"], b["image"]) > 1.0


def test_photo_edges(client, tmp_path):
    # A synthetic "photo": a shaded disc on a gradient, colour, no flat paper.
    yy, xx = np.mgrid[0:200, 0:300]
    photo = np.stack([xx * 0.6, yy * 0.8 + 40, 120 + 0 * xx], -1)
    disc = (xx - 150) ** 2 + (yy - 100) ** 2 < 60**2
    photo[disc] = [200, 60, 40]
    path = tmp_path / "photo.jpg"
    Image.fromarray(photo.astype(np.uint8)).save(path, quality=90)
    for method in ("canny", "hed"):
        out = render(client, path, edges=method)
        assert out["image"].shape == (SIZE, SIZE, 3)
        assert (out["edges"] < 128).any() and (out["edges"] > 128).any()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a word the error message must contain)."""
    png = io.BytesIO()
    Image.open(CAT).save(png, format="PNG")
    files = {
        "empty": (b"", "empty"),
        "text": (b"this is not an image at all\n" * 20, "not an image"),
        "truncated": (png.getvalue()[: len(png.getvalue()) // 2], "truncated"),
        # 100000 x 100000 declared in the header, a few bytes of data: must be refused unopened
        "bomb": (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
                 + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""), "large"),
        "blank": (_encode(np.full((80, 80, 3), 255, np.uint8)), "No lines"),
    }
    out = {}
    for name, (data, word) in files.items():
        p = tmp / f"{name}.png"
        p.write_bytes(data)
        out[name] = (p, word)
    return out


def _encode(a: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("name", ["empty", "text", "truncated", "bomb", "blank"])
def test_bad_file_is_explained_and_the_server_keeps_serving(client, tmp_path, name):
    from gradio_client.exceptions import AppError

    path, word = bad_files(tmp_path)[name]
    with pytest.raises(AppError) as e:
        render(client, path)
    assert word.lower() in str(e.value).lower()
    assert render(client, CAT)["image"].shape == (SIZE, SIZE, 3)


def test_awkward_but_valid_images_render(client, tmp_path):
    cat = np.asarray(Image.open(CAT).convert("L"))
    cases = {
        "gray16.png": Image.fromarray(cat.astype(np.uint16) * 257),
        "cmyk.jpg": Image.fromarray(cat).convert("CMYK"),
        "palette.png": Image.fromarray(cat).convert("P"),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
    frames = [Image.fromarray(cat).convert("RGB"), Image.new("RGB", cat.shape[::-1], "white")]
    frames[0].save(tmp_path / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    first = render(client, CAT, deterministic=True)["image"]
    for name in [*cases, "animated.gif"]:
        out = render(client, tmp_path / name, deterministic=True)
        assert out["image"].shape == (SIZE, SIZE, 3), name
        assert diff(out["image"], first) < 2.0, name  # the same drawing whatever its encoding


@pytest.mark.parametrize("kwargs, word", [
    (dict(n=9), "samples"), (dict(n=0), "samples"), (dict(seed=-1), "seed"),
    (dict(model="../weights/tiny-cats"), "unknown model"), (dict(edges="sobel"), "edges"),
    (dict(n="3"), "samples must be a whole number"), (dict(seed="1e3"), "seed must be a whole number"),
    (dict(deterministic="false"), "deterministic must be true or false"),
])
def test_bad_options_are_refused(client, kwargs, word):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=word):
        render(client, CAT, **kwargs)


# ---------------------------------------------------------------------------------------------
# The service behind the UI's events


def canvas_value(image: np.ndarray | Image.Image) -> str:
    """What the browser's sketch canvas sends: a PNG data URL of its 256 x 256 RGB paper."""
    import base64

    buf = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buf, "png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_empty_canvas_is_a_calm_state_not_an_error(manager):
    for value in (None, "", canvas_value(np.full((256, 256, 3), 255, np.uint8))):
        out = manager.render_sketch(value, model_id=MODELS[0])
        assert out.image is None and out.samples == [] and out.status == EMPTY_SKETCH


def test_sketch_from_the_canvas(manager):
    """The canvas' value renders exactly like the same drawing uploaded as a file."""
    cat = Image.open(CAT).convert("RGB").resize((256, 256))
    out = manager.render_sketch(canvas_value(cat), model_id=MODELS[0], n=2, seed=3)
    ref = manager.render_upload(CAT, model_id=MODELS[0], n=2, seed=3, edges="sketch")
    assert len(out.samples) == 2 and np.abs(out.edges.astype(int) - ref.edges).mean() < 2
    assert out.edges.min() == 0 and out.edges.max() == 255


def test_example_onto_the_canvas_round_trips():
    from p2p_demo import canvas

    drawing = np.asarray(Image.open(CAT).convert("RGB"))
    value = canvas.encode(drawing)
    assert value.startswith(canvas.PREFIX) and len(value) < canvas.MAX_CHARS
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(canvas.decode(value)))), drawing)  # lossless
    small = canvas.encode(drawing[::2, ::2])  # any other size is fitted to the canvas
    assert Image.open(io.BytesIO(canvas.decode(small))).size == (canvas.SIZE, canvas.SIZE)


def _data_url(data: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(data).decode()


_PAPER = np.full((256, 256, 3), 255, np.uint8)


@pytest.mark.parametrize("value, word", [
    ("data:image/jpeg;base64,AAAA", "PNG data URL"),
    ({"composite": "/etc/passwd"}, "PNG data URL"),
    ("data:image/png;base64,not base64!", "base64"),
    ("data:image/png;base64," + "A" * 1_000_001, "at most"),
    ("data:image/png;base64," + "iVBORw0KGgo=", "not a PNG image"),  # a PNG signature, nothing else
    # the bytes decide, not the prefix: JPEG, GIF and WebP of the canvas' size behind "data:image/png"
    (_data_url(_encode(_PAPER, "JPEG")), "not a PNG image"),
    (_data_url(_encode(_PAPER, "GIF")), "not a PNG image"),
    (_data_url(_encode(_PAPER, "WEBP")), "not a PNG image"),
    (_data_url(_encode(_PAPER[:255])), "256x255 pixels; the canvas is 256x256"),
    (_data_url(_encode(np.full((512, 512, 3), 255, np.uint8))), "512x512 pixels"),
])
def test_a_forged_canvas_value_is_refused_with_a_message(manager, value, word):
    with pytest.raises(UserMessage, match=word):
        manager.render_sketch(value, model_id=MODELS[0])
    assert manager.render_sketch(canvas_value(Image.open(CAT).convert("RGB")), model_id=MODELS[0]).image is not None


def test_live_render_shows_sample_1_first_then_the_same_samples_as_one_call(manager):
    value = canvas_value(Image.open(CAT).convert("RGB"))
    steps = list(manager.render_sketch_live(value, model_id=MODELS[0], n=3, seed=5))
    whole = manager.render_sketch(value, model_id=MODELS[0], n=3, seed=5)
    assert [s.partial for s in steps] == [True, False]
    assert len(steps[0].samples) == 1 and "sample 1 of 3, seed 5" in steps[0].status
    assert "3 samples, seed 5" in steps[1].status and steps[1].timings["n"] == 3
    diff = lambda a, b: np.abs(a.astype(int) - b.astype(int)).max()  # noqa: E731 (batch-size rounding)
    assert max(diff(a, b) for a, b in zip(steps[1].samples, whole.samples)) <= 1
    assert diff(steps[0].image, whole.image) <= 1 and len({s.tobytes() for s in steps[1].samples}) == 3
    # one step when there is nothing more to draw: a blank canvas, 1 sample, dropout off
    assert [len(s.samples) for s in manager.render_sketch_live("", model_id=MODELS[0], n=3)] == [0]
    assert [len(s.samples) for s in manager.render_sketch_live(value, model_id=MODELS[0], n=1)] == [1]
    det = list(manager.render_sketch_live(value, model_id=MODELS[0], n=3, deterministic=True))
    assert len(det) == 1 and len(det[0].samples) == 3 and not det[0].partial
    with pytest.raises(UserMessage, match="samples must be"):
        next(manager.render_sketch_live(value, model_id=MODELS[0], n=9))


def test_offline_hub_model_keeps_the_current_one(manager, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert OFFLINE in dict((v, k) for k, v in manager.choices())
    seen = []
    with pytest.raises(UserMessage) as e:
        manager.switch(OFFLINE, progress=lambda *a, **k: seen.append(a))
    assert e.value.level == "warning" and "Could not download Offline model" in str(e.value)
    assert seen and seen[0][0] == 0.0  # progress was shown before the attempt
    out = manager.render_upload(CAT, model_id=MODELS[0])
    assert out.image.shape == (SIZE, SIZE, 3)


def test_switch_loads_and_describes(manager):
    text = manager.switch(MODELS[1])
    assert "Tiny shoes" in text and "MIT" in text and "black lines on white" in text
    assert manager.is_loaded(MODELS[1])
