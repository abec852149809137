"""Raster sketches: a drawing's pixels -> its ink -> the canonical edge map.

Any pen, size, place on the page and polarity: the ink is found against the local paper tone,
framed, resampled and redrawn in the canonical style (``style``).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps

from .. import image as im
from .style import EdgeMap, LineStyle, NothingDrawn, _fit_mask, _remove_small, canonical_lines, frame_box

# Contrast (grey levels against the local paper) below which nothing counts as ink: JPEG
# noise and paper texture stay under it, a light pencil line (~40 levels) does not.
MIN_INK_CONTRAST = 24


def sketch_ink(value: Any) -> np.ndarray:
    """Where the ink is: bool (H, W) mask, True on strokes, in the source's pixels.

    ``value`` is an (H, W) / (H, W, 3|4) array, a PIL image, a path or bytes. Transparency is
    flattened onto white paper (or onto black, when that is the only way light strokes on a
    transparent canvas show up). Light-on-dark drawings are inverted. Ink is what is darker
    than the local paper by more than an Otsu threshold, so light pencil, anti-aliased and
    unevenly lit drawings all work. A blank canvas gives an all-False mask.
    """
    gray, alpha = _sketch_gray(value)
    ink = _ink(gray)
    if not ink.any() and alpha is not None:
        # Light strokes on a transparent canvas vanish on white: flatten onto black instead
        # (c*a = white-flattened - (255 - a)), which _ink then reads as light-on-dark.
        ink = _ink(cv2.subtract(gray, 255 - alpha))
    return ink


def normalize_sketch(value: Any, style: LineStyle = LineStyle()) -> EdgeMap:
    """A user's drawing (see ``sketch_ink`` for what it may be) -> canonical edge map.

    Raises NothingDrawn on an empty canvas.
    """
    ink = sketch_ink(value)
    if not ink.any():
        raise NothingDrawn("nothing drawn yet: the canvas is blank (draw dark lines on light paper)")
    box = frame_box(ink, style.margin)
    return EdgeMap(canonical_lines(_fit_mask(ink, box, style.size), style), box)


def _sketch_gray(value: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Anything a sketch can come as -> (grey flattened onto white, alpha or None if opaque)."""
    if value is None:
        raise NothingDrawn("nothing drawn yet")
    if isinstance(value, np.ndarray) and value.ndim == 2 and value.dtype == np.uint8:
        return value, None  # already what we need: the common fast path
    rgba = _rgba(value)
    gray, alpha = im.to_gray(rgba[..., :3]), rgba[..., 3]
    if alpha.min() == 255:
        return gray, None
    # Flatten onto white as image.array_to_rgb does, on the one grey channel (4x less work):
    # g*a + 255*(1 - a), in integers.
    a = alpha.astype(np.uint32)
    return ((gray * a + 255 * (255 - a) + 127) // 255).astype(np.uint8), alpha


def _rgba(source: Any) -> np.ndarray:
    """One image -> (H, W, 4) uint8; alpha 255 where the source has none."""
    if isinstance(source, np.ndarray):
        if source.ndim == 3 and source.shape[2] == 4:
            if source.dtype == np.uint8:
                return source
            rgb = im.array_to_rgb(source[..., :3])  # image.py's dtype rules for colour and alpha
            alpha = im.array_to_rgb(source[..., 3])[..., 0]
            return np.dstack([rgb, alpha])
        rgb = im.array_to_rgb(source)
    else:
        img = source if isinstance(source, Image.Image) else im._open(source)
        has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info)
        if not has_alpha:
            rgb = im.load_image(img)
        else:
            if img.width * img.height > im.MAX_PIXELS:
                im.load_image(img)  # raises ImageError with image.py's message
            try:
                img.load()
            except (OSError, SyntaxError, ValueError):
                im.load_image(img)  # raises ImageError with image.py's message
            return np.asarray(ImageOps.exif_transpose(img).convert("RGBA")).copy()
    return np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])


def _ink(gray: np.ndarray) -> np.ndarray:
    """Greyscale drawing -> bool ink mask (see sketch_ink)."""
    if np.median(gray) < 128:  # paper is the majority of a drawing: dark paper, light lines
        gray = 255 - gray
    # Darkness against the local paper tone. The paper is the lightest tone within ~1/8 of
    # the side (a max filter on a <= 32 px thumbnail), so the uneven lighting of a photographed
    # page cancels out while strokes up to ~1/4 of the side wide keep their full contrast
    # (wider blobs come out hollow: their outline, as an edge detector would see them).
    h, w = gray.shape
    f = min(1.0, 32.0 / max(h, w))
    thumb = cv2.resize(gray, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    thumb = cv2.GaussianBlur(cv2.dilate(thumb, np.ones((9, 9), np.uint8)), (5, 5), 0)
    paper = cv2.resize(thumb, (w, h), interpolation=cv2.INTER_LINEAR)
    dark = cv2.subtract(paper, gray)  # uint8, saturates at 0
    if dark.max() <= MIN_INK_CONTRAST:
        return np.zeros((h, w), bool)
    # Otsu splits paper from ink whatever the pen's darkness; the cap at half contrast keeps
    # anti-aliased black strokes at their drawn width, the floor keeps paper noise out.
    otsu, _ = cv2.threshold(dark, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    ink = dark > min(max(otsu, MIN_INK_CONTRAST), 128)
    return _remove_small(ink, max(3, round((max(h, w) / 200) ** 2)))
