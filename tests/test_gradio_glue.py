"""p2p_demo/gradio_glue.py: what the app takes from Gradio beyond its public API, pinned to the
installed Gradio so an upgrade that changes it fails here, not on a visitor's download."""

from __future__ import annotations

import hashlib
import inspect
import re
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio import processing_utils as pu
from PIL import Image

from p2p_demo import gradio_glue as glue
from p2p_demo.service import UserMessage

ROOT = Path(__file__).resolve().parents[1]
# sha256 of inspect.getsource(gradio.processing_utils.save_pil_to_cache) in Gradio 6.31.0: the function
# atomic_output_cache replaces. Another value means Gradio changed it: re-read it, check that the
# replacement still writes what it writes (the test below), then update both pins.
GRADIO_SAVE_PIL_TO_CACHE_SHA256 = "ea8f5a3ffa0371a17de649d654e2ddda471362b6e0301e8c323a60009af94468"


def picture(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 56, 3), dtype=np.uint8))


def test_the_patch_is_written_for_the_installed_gradio():
    pinned = re.search(r"^gradio==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pinned and pinned.group(1) == glue.GRADIO_VERSION == gr.__version__
    assert glue.atomic_output_cache()
    original = pu.save_pil_to_cache.replaced
    assert hashlib.sha256(inspect.getsource(original).encode()).hexdigest() == GRADIO_SAVE_PIL_TO_CACHE_SHA256
    assert inspect.signature(original).parameters.keys() == inspect.signature(pu.save_pil_to_cache).parameters.keys()
    assert glue.atomic_output_cache() and pu.save_pil_to_cache.replaced is original  # applied once


def test_the_atomic_writer_writes_what_gradio_would(tmp_path):
    glue.atomic_output_cache()
    ours, gradios = pu.save_pil_to_cache, pu.save_pil_to_cache.replaced
    img = picture()
    for fmt in ("webp", "jpeg"):  # Gradio's encoder: the same bytes at the same path
        a = ours(img, str(tmp_path / "a"), name="out", format=fmt)
        b = gradios(img, str(tmp_path / "b"), name="out", format=fmt)
        assert Path(a).relative_to(tmp_path / "a") == Path(b).relative_to(tmp_path / "b")
        assert Path(a).read_bytes() == Path(b).read_bytes()
    # PNG: zlib's fastest level, so other bytes, the same pixels, at <cache>/<hash of the bytes>/<name>.png
    a = Path(ours(img, str(tmp_path / "a"), name="out", format="png"))
    b = Path(gradios(img, str(tmp_path / "b"), name="out", format="png"))
    assert a.name == b.name == "out.png" and a.parent.name == pu.hash_bytes(a.read_bytes())
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_a_gradio_with_another_writer_keeps_its_own(monkeypatch, caplog):
    def save_pil_to_cache(img, cache_dir, name="image", format="webp", quality=90):
        return "theirs"

    monkeypatch.setattr(pu, "save_pil_to_cache", save_pil_to_cache)
    assert glue.atomic_output_cache() is False
    assert pu.save_pil_to_cache is save_pil_to_cache
    assert "written for 6.31.0" in caplog.text


def test_only_uploaded_files_pass_the_guard(tmp_path):
    uploads = Path(gr.utils.get_upload_folder())
    inside = {"path": str(uploads / "abc" / "drawing.png")}
    assert glue.uploaded(inside) is inside
    assert glue.uploaded(None) is None and glue.uploaded({"path": None}) == {"path": None}
    for path in ("/etc/passwd", str(tmp_path / "x.png"), str(uploads / ".." / "elsewhere.png")):
        with pytest.raises(UserMessage, match="upload the image itself"):
            glue.uploaded({"path": path})


def test_user_messages_become_toasts_and_generators_stay_generators():
    @glue.shown
    def refuses(x):
        raise UserMessage(f"no {x}")

    @glue.shown
    def streams(n):
        yield from range(n)
        raise UserMessage("stop")

    with pytest.raises(gr.Error, match="no cat"):
        refuses("cat")
    assert inspect.isgeneratorfunction(streams) and refuses.__name__ == "refuses"
    it = streams(2)
    assert [next(it), next(it)] == [0, 1]
    with pytest.raises(gr.Error, match="stop"):
        next(it)

    @glue.shown
    def other():
        raise KeyError("a bug stays a bug")

    with pytest.raises(KeyError):
        other()


def test_launch_needs_an_app_set_up_by_serve():
    with gr.Blocks() as demo:
        gr.Markdown("x")
    with pytest.raises(LookupError, match="build it with app.build_app"):
        glue.launch(demo)
    with pytest.raises(LookupError):
        glue.browser_models(demo)


def test_off_spaces_on_gpu_is_the_function_itself():
    def f():
        return 1

    assert glue.spaces is not None or glue.on_gpu(f) is f
