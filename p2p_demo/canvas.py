"""The app's sketch canvas: a small gr.HTML component, and the codec of the value it sends.

Why not gr.Sketchpad: on every stroke Gradio 6's image editor exports its background, layer and
composite as PNGs through its WebGL scene and posts each to the server before the change event
leaves the browser; in a browser that paints in software that is 0.6-1 s per stroke (measured by
``python -m bench.app_latency``), three times the whole live-render budget. This canvas is a plain
2D canvas of the model's own size (256 x 256): a finished stroke becomes a PNG data URL in the
component's value (~2-6 kB), which travels inside the event itself. Brush, eraser, undo/redo,
clear and keyboard shortcuts are in ``static/sketch_canvas.js``.

The value is untrusted input from the browser: :func:`decode` accepts only a base64 data URL of
bounded length whose bytes are a PNG (by its signature, not the URL's prefix) of the canvas' own
size (by its header), and hands the bytes to ``p2p_demo.image.load_image`` like any upload.

A drawing made only of strokes (not started from an example picture) also carries its strokes as
vectors, in a ``tEXt`` chunk named ``p2p-strokes`` of that same PNG (JSON, see
``p2p_demo.edges.Strokes``): the server frames and redraws them exactly as the browser does
(:func:`strokes`), so a picture rendered in the browser and one rendered here are the same.
"""

from __future__ import annotations

import base64
import binascii
import struct
from importlib import resources
from typing import Any

import numpy as np

from .errors import P2PError

SIZE = 256  # canvas pixels; what the bundled 256 px models see, and enough for any model
PREFIX = "data:image/png;base64,"
STROKES_KEY = "p2p-strokes"  # the PNG text chunk holding the strokes as vectors
# A 256 x 256 RGB PNG is at most ~200 kB even as noise; base64 adds a third. Anything longer is
# not from the canvas.
MAX_CHARS = 1_000_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class CanvasError(P2PError, ValueError):
    """The canvas value is not a drawing the canvas could have sent."""


def _asset(name: str) -> str:
    return resources.files("p2p_demo").joinpath("static", name).read_text(encoding="utf-8")


def sketch_canvas(**kwargs: Any):
    """The canvas as a gr.HTML component (its value: a PNG data URL, or "" when blank)."""
    import gradio as gr

    return gr.HTML(value="", html_template=_asset("sketch_canvas.html"), css_template=_asset("sketch_canvas.css"),
                   js_on_load=_asset("sketch_canvas.js"), **kwargs)


# Where the browser renderer (static/p2p_browser.js) paints; shown instead of the server's output
# components while the browser renders (the class p2p-browser, set by p2p_browser.js on what Gradio's
# .contain element holds: Gradio scopes app CSS to it).
BROWSER_VIEWS = {
    "output": '<canvas id="p2p-output" width="256" height="256" aria-label="Output (sample 1), rendered in your '
              'browser"></canvas><div id="p2p-status" role="status"></div>',
    "edges": '<canvas id="p2p-edges" width="256" height="256" aria-label="What the model sees"></canvas>',
    "samples": '<div id="p2p-samples" aria-label="Samples (dropout on), rendered in your browser"></div>',
}
BROWSER_CSS = """
#browser-output, #browser-edges, #browser-samples { display: none !important; }
.p2p-browser #browser-output, .p2p-browser #browser-edges, .p2p-browser #browser-samples { display: block !important; }
.p2p-browser #output, .p2p-browser #edges, .p2p-browser #gallery, .p2p-browser #status { display: none !important; }
#p2p-output, #p2p-edges { width: 100%; max-width: 330px; aspect-ratio: 1 / 1; display: block; margin: auto; }
#p2p-edges { max-width: 220px; image-rendering: pixelated; }
#p2p-samples { display: flex; gap: 6px; flex-wrap: wrap; min-height: 120px; }
#p2p-samples canvas { width: 150px; height: 150px; }
"""


def browser_view(part: str, **kwargs: Any):
    """The browser renderer's output, edge map or samples, as a gr.HTML (hidden until it renders)."""
    import gradio as gr

    return gr.HTML(BROWSER_VIEWS[part], elem_id=f"browser-{part}", **kwargs)


def decode(value: Any) -> bytes | None:
    """PNG bytes of a canvas value; None for a blank canvas ("" or None). Raises CanvasError."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith(PREFIX):
        raise CanvasError("expected a PNG data URL from the drawing canvas")
    if len(value) > MAX_CHARS:
        raise CanvasError(f"the drawing is {len(value):,} characters long; the canvas sends at most {MAX_CHARS:,}")
    try:
        png = base64.b64decode(value[len(PREFIX):], validate=True)
    except (binascii.Error, ValueError) as e:
        raise CanvasError(f"the drawing is not valid base64 ({e})") from None
    # The signature, then the IHDR chunk (length 13) with width and height: the header is all we
    # read here, so a forged size costs nothing.
    if not png.startswith(PNG_SIGNATURE) or png[12:16] != b"IHDR" or len(png) < 24:
        raise CanvasError("the drawing is not a PNG image (the canvas sends PNG only)")
    w, h = struct.unpack(">II", png[16:24])
    if (w, h) != (SIZE, SIZE):
        raise CanvasError(f"the drawing is {w}x{h} pixels; the canvas is {SIZE}x{SIZE}")
    return png


def strokes(png: bytes):
    """The drawing's strokes (``edges.Strokes``) from a canvas PNG, or None when it carries none
    (a drawing started from an example, an upload). Raises CanvasError on a malformed record."""
    import io
    import json

    from PIL import Image, UnidentifiedImageError

    from .edges import Strokes

    try:
        with Image.open(io.BytesIO(png)) as img:
            record = img.info.get(STROKES_KEY)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None  # not a PNG we can read: load_image explains it
    if record is None:
        return None
    try:
        return Strokes.from_dict(json.loads(record))
    except (ValueError, TypeError, RecursionError) as e:
        raise CanvasError(f"the drawing's strokes cannot be read ({e})") from None


def encode(image: np.ndarray) -> str:
    """A canvas value showing ``image`` (an example drawing), resized to the canvas."""
    from .image import array_to_rgb, encode_image, resize

    rgb = array_to_rgb(image)
    if rgb.shape[:2] != (SIZE, SIZE):
        rgb = resize(rgb, SIZE)
    return PREFIX + base64.b64encode(encode_image(rgb, "png")).decode("ascii")
