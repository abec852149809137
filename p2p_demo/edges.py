"""Edge maps: bring users' sketches and photos' edges to one canonical line style.

pix2pix's edges2shoes / edges2cats models were trained on HED edges thinned to 1 px, while
people draw with whatever pen the canvas gives them, at any size, anywhere on the canvas, in
any polarity. That mismatch is why "results on my own sketches are bad". Here both sides go
through the same last steps, so what a model sees at serve time is what it saw in training:

    sketch -> ink mask --\
                          >-- frame (crop to the drawing + margin, square) -> resize to
    photo -> edge mask --/    ``style.size`` -> thin to 1 px -> dilate to ``style.stroke_width``

Every edge map is ``(size, size)`` uint8, black (0) lines on white (255) paper, values only
0 and 255. ``EdgeMap.box`` is the square crop box in source pixels; ``apply_box`` cuts the same
square out of a target image, so training pairs stay aligned.

The canonical line width scales with the side (``LineStyle.for_size``): 3 px at 256, i.e.
about 1.2 % of the side. 1 px lines (pix2pix's own) alias and break up whenever a map is
resized or compressed and are fragile input for the generator's first stride-2 conv; much
wider lines merge the details of a 256 px drawing (eyes, laces) into blobs. 3 px at 256 is
also about what a default pen on a browser canvas looks like once the drawing is framed.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps
from skimage.morphology import skeletonize

from . import image as im
from .files import strict_from_dict
from .hed import HED

HED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "hed" / "model.safetensors"

# pix2pix's HED post-processing (PostprocessHED.m of the reference): keep an NMS'd edge where
# its probability exceeds 25/255, and drop connected edge pieces of fewer than 5 pixels.
HED_THRESHOLD = 25 / 255
MIN_EDGE_PIXELS = 5
# Mirror padding around a photo before HED, against edges at the image border. A multiple of
# 16 (VGG's total stride) keeps the pooling grid where it would be without the padding.
HED_MIRROR = 16
# Contrast (grey levels against the local paper) below which nothing counts as ink: JPEG
# noise and paper texture stay under it, a light pencil line (~40 levels) does not.
MIN_INK_CONTRAST = 24


class NothingDrawn(ValueError):
    """The canvas is empty or the image holds no lines/edges to work from."""


@dataclass(frozen=True)
class LineStyle:
    """The canonical line style a model was trained with (stored in its config)."""

    size: int = 256  # output side in px (square)
    stroke_width: int = 3  # line width in px at `size`
    margin: float = 0.06  # blank border around the drawing, as a fraction of the side

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 4096:
            raise ValueError(f"LineStyle.size must be in [8, 4096], got {self.size}")
        if not 1 <= self.stroke_width <= self.size // 8:
            raise ValueError(f"LineStyle.stroke_width must be in [1, size/8], got {self.stroke_width}")
        if not 0.0 <= self.margin < 0.4:
            raise ValueError(f"LineStyle.margin must be in [0, 0.4), got {self.margin}")

    @classmethod
    def for_size(cls, size: int, margin: float = 0.06) -> LineStyle:
        """The canonical style at any resolution: the line width is ~1.2 % of the side
        (3 px at 256, 2 at 128, 6 at 512), so a drawing looks the same at every size."""
        return cls(size=size, stroke_width=max(1, round(size * 3 / 256)), margin=margin)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LineStyle:
        return strict_from_dict(cls, d, "LineStyle fields")


@dataclass
class EdgeMap:
    image: np.ndarray  # (size, size) uint8, 0 ink / 255 paper, canonical style
    box: tuple[int, int, int, int]  # square crop box (x0, y0, x1, y1) in source pixels (may extend past the source)


# --------------------------------------------------------------------------- sketches


def sketch_ink(value: Any) -> np.ndarray:
    """Where the ink is: bool (H, W) mask, True on strokes, in the source's pixels.

    ``value`` is an image-editor dict ``{"background", "layers", "composite"}`` (Gradio's
    ImageEditor value; any part may be None; the composite is read first, else background +
    layers are flattened), an (H, W) / (H, W, 3|4) array, a PIL image, a path or bytes. Transparency is
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


def frame_box(ink: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """Square box (x0, y0, x1, y1), x1/y1 exclusive, centred on the ink's bounding box, whose
    side leaves ``margin`` (a fraction of the side) blank on each side of the longer extent."""
    x, y, w, h = cv2.boundingRect(ink.astype(np.uint8))
    if w == 0 or h == 0:
        raise NothingDrawn("nothing drawn yet: there are no lines to frame")
    side = max(8, math.ceil(max(w, h) / (1.0 - 2.0 * margin)))
    x0 = math.floor(x + w / 2 - side / 2)
    y0 = math.floor(y + h / 2 - side / 2)
    return (x0, y0, x0 + side, y0 + side)


def apply_box(image: np.ndarray, box: tuple[int, int, int, int], size: int, fill: int | tuple = 255) -> np.ndarray:
    """Cut the square ``box`` out of a uint8 (H, W[, C]) image, padding with ``fill`` where it
    extends past the image, and resize it to (size, size). Used for edge maps and targets alike."""
    return im.resize(_crop(image, box, fill), size)


def canonical_lines(ink: np.ndarray, style: LineStyle = LineStyle()) -> np.ndarray:
    """Bool ink mask at the output resolution -> uint8 edge map in the canonical line style.

    Every stroke is thinned to its 1 px centre line (skeletonize) and redrawn with a round pen
    of ``style.stroke_width`` px, so thin pens, fat pens, HED and Canny edges all end up alike.
    Pinholes inside fat strokes are filled first so they do not turn into little loops.
    """
    w = style.stroke_width
    ink = _fill_small_holes(ink, max_area=w * w)
    skeleton = skeletonize(ink).astype(np.uint8)
    lines = cv2.dilate(skeleton, round_pen(w)) if w > 1 else skeleton
    return np.where(lines > 0, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=16)
def round_pen(width: int) -> np.ndarray:
    """A round pen: the pixels whose centres lie within width/2 of the pen's centre.

    Rounder than OpenCV's MORPH_ELLIPSE, whose 3x3 "ellipse" is a plus sign that draws
    diagonal lines 30 % thinner than straight ones; this one makes them at most ~18 % thicker.
    """
    c = np.arange(width) - (width - 1) / 2
    return (c[:, None] ** 2 + c[None, :] ** 2 <= (width / 2) ** 2 + 1e-9).astype(np.uint8)


def normalize_sketch(value: Any, style: LineStyle = LineStyle()) -> EdgeMap:
    """A user's drawing (see ``sketch_ink`` for what it may be) -> canonical edge map.

    Raises NothingDrawn on an empty canvas.
    """
    ink = sketch_ink(value)
    if not ink.any():
        raise NothingDrawn("nothing drawn yet: the canvas is blank (draw dark lines on light paper)")
    box = frame_box(ink, style.margin)
    return EdgeMap(canonical_lines(_fit_mask(ink, box, style.size), style), box)


# --------------------------------------------------------------------------- strokes (vectors)
#
# The canvas also sends its strokes as vectors (p2p_demo.canvas), and a drawing made of strokes
# only is framed and redrawn from them, here and in the browser (static/p2p_strokes.js, the twin
# of this section: the same float64 operations in the same order, so both give the same pixels):
#
#   box: the brush strokes' extent (points +- half the pen's width), centred in a square whose side
#        leaves ``style.margin`` blank on each side of the longer extent (as frame_box);
#   redraw: each stroke in order, mapped into the square at ``style.size``, as a round-capped line of
#        ``style.stroke_width`` px (brush) or of its own scaled width (eraser, which removes ink);
#        a pixel is covered when its centre lies within half the width of the segment.
#
# No thinning is needed: a vector is already the stroke's centre line.

MAX_STROKES = 2000
MAX_POINTS = 50_000


@dataclass(frozen=True)
class Stroke:
    tool: str  # "brush" | "eraser"
    width: float  # pen width in canvas pixels
    points: tuple[tuple[float, float], ...]  # canvas pixels, x right, y down


@dataclass(frozen=True)
class Strokes:
    """A drawing as vectors: what the sketch canvas drew, in order, on a square canvas of ``size``."""

    size: int
    strokes: tuple[Stroke, ...]

    @classmethod
    def from_dict(cls, d: Any) -> "Strokes":
        """Parse the canvas' stroke record (untrusted): ``{"v": 1, "size": 256, "strokes": [{"t": "b"|"e",
        "w": width, "p": [x0, y0, x1, y1, ...]}, ...]}``. Raises ValueError saying what is wrong."""
        if not isinstance(d, dict) or d.get("v") != 1:
            raise ValueError("the stroke record is not version 1")
        size = d.get("size")
        if not isinstance(size, int) or not 8 <= size <= 4096:
            raise ValueError(f"the stroke record's canvas size must be an integer in [8, 4096], got {size!r}")
        raw = d.get("strokes")
        if not isinstance(raw, list) or len(raw) > MAX_STROKES:
            raise ValueError(f"the stroke record must hold a list of at most {MAX_STROKES} strokes")
        strokes, total = [], 0
        for s in raw:
            if not isinstance(s, dict) or s.get("t") not in ("b", "e"):
                raise ValueError("each stroke must be a brush ('b') or eraser ('e') stroke")
            w, pts = s.get("w"), s.get("p")
            if not isinstance(w, (int, float)) or isinstance(w, bool) or not 0 < w <= size / 4:
                raise ValueError(f"a stroke's width must be a number in (0, {size / 4}], got {w!r}")
            if not isinstance(pts, list) or len(pts) < 2 or len(pts) % 2:
                raise ValueError("a stroke's points must be a flat list of x, y pairs")
            total += len(pts) // 2
            if total > MAX_POINTS:
                raise ValueError(f"the drawing has more than {MAX_POINTS} points")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and -size <= v <= 2 * size
                       for v in pts):
                raise ValueError("a stroke's points must be numbers within the canvas (give or take its size)")
            xy = tuple((float(pts[i]), float(pts[i + 1])) for i in range(0, len(pts), 2))
            strokes.append(Stroke("brush" if s["t"] == "b" else "eraser", float(w), xy))
        return cls(size, tuple(strokes))


def strokes_box(strokes: Strokes, margin: float) -> tuple[float, float, float, float]:
    """The square (x0, y0, x1, y1) in canvas pixels (floats) framing the brush strokes, as frame_box."""
    x_lo = y_lo = math.inf
    x_hi = y_hi = -math.inf
    for s in strokes.strokes:
        if s.tool != "brush":
            continue
        r = s.width / 2
        for x, y in s.points:
            x_lo, x_hi = min(x_lo, x - r), max(x_hi, x + r)
            y_lo, y_hi = min(y_lo, y - r), max(y_hi, y + r)
    if x_lo == math.inf:
        raise NothingDrawn("nothing drawn yet: there are no lines to frame")
    side = max(8.0, max(x_hi - x_lo, y_hi - y_lo) / (1.0 - 2.0 * margin))
    x0 = (x_lo + x_hi) / 2 - side / 2
    y0 = (y_lo + y_hi) / 2 - side / 2
    return (x0, y0, x0 + side, y0 + side)


def _paint_segment(ink: np.ndarray, a: tuple[float, float], b: tuple[float, float], r: float, value: bool) -> None:
    """Set the pixels whose centres lie within r of segment ab (pixel units) to value."""
    n = ink.shape[0]
    i0, i1 = max(0, math.floor(min(a[0], b[0]) - r)), min(n, math.ceil(max(a[0], b[0]) + r) + 1)
    j0, j1 = max(0, math.floor(min(a[1], b[1]) - r)), min(n, math.ceil(max(a[1], b[1]) + r) + 1)
    if i0 >= i1 or j0 >= j1:
        return
    px = np.arange(i0, i1, dtype=np.float64)[None, :] + 0.5
    py = np.arange(j0, j1, dtype=np.float64)[:, None] + 0.5
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = dx * dx + dy * dy
    if length2 > 0:
        t = np.clip(((px - a[0]) * dx + (py - a[1]) * dy) / length2, 0.0, 1.0)
    else:
        t = np.zeros((j1 - j0, i1 - i0))
    ex, ey = px - (a[0] + t * dx), py - (a[1] + t * dy)
    hit = ex * ex + ey * ey <= r * r
    ink[j0:j1, i0:i1][hit] = value


def normalize_strokes(strokes: Strokes, style: LineStyle = LineStyle()) -> EdgeMap:
    """A drawing as vectors -> canonical edge map, framed and redrawn from the vectors (see above).

    ``box`` is the framing square rounded outwards to canvas pixels. Raises NothingDrawn when no
    ink is left (no brush stroke, or everything erased).
    """
    x0, y0, x1, _ = strokes_box(strokes, style.margin)
    k = style.size / (x1 - x0)  # output pixels per canvas pixel
    ink = np.zeros((style.size, style.size), bool)
    for s in strokes.strokes:
        brush = s.tool == "brush"
        r = style.stroke_width / 2 if brush else s.width / 2 * k
        pts = [((x - x0) * k, (y - y0) * k) for x, y in s.points]
        for a, b in zip(pts, pts[1:] if len(pts) > 1 else pts):
            _paint_segment(ink, a, b, r, brush)
    if not ink.any():
        raise NothingDrawn("nothing drawn yet: the canvas is blank (draw dark lines on light paper)")
    box = (math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y0 + (x1 - x0)))
    return EdgeMap(np.where(ink, 0, 255).astype(np.uint8), box)


# --------------------------------------------------------------------------- photos


def photo_to_edges(image: im.ImageSource, method: str = "hed", style: LineStyle = LineStyle()) -> EdgeMap:
    """A photo -> canonical edge map, as pix2pix's edges2shoes inputs were made, then framed.

    The photo is resized so its longer side is ``style.size`` (the scale HED ran at for
    pix2pix's 256 px datasets), edges are found with ``method`` ("hed": HED + pix2pix's
    post-processing; "canny": the fast path), framed like a sketch and redrawn in the
    canonical style. ``box`` is in the photo's own pixels: ``apply_box(photo, box, size)``
    gives the aligned target. Raises NothingDrawn when no edge survives.
    """
    rgb = im.load_image(image)
    h, w = rgb.shape[:2]
    scale = style.size / max(h, w)
    work = im.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))))
    if method == "hed":
        edges = hed_postprocess(edge_probability(work))
    elif method == "canny":
        edges = canny_edges(work)
    else:
        raise ValueError(f"unknown edge method {method!r}; use 'hed' or 'canny'")
    if not edges.any():
        raise NothingDrawn("no edges found in the image (is it blank or flat?)")
    x0, y0, x1, _ = frame_box(edges, style.margin)
    # The square in the photo's own pixels, then exactly that square back in work pixels, so
    # the edge map lines up with apply_box(photo, box) to a fraction of a pixel.
    sx, sy = work.shape[1] / w, work.shape[0] / h
    bx, by = round(x0 / sx), round(y0 / sy)
    side = max(1, round((x1 - x0) / scale))
    fit = _fit_mask(edges, (bx * sx, by * sy, (bx + side) * sx, (by + side) * sy), style.size)
    return EdgeMap(canonical_lines(fit, style), (bx, by, bx + side, by + side))


@functools.lru_cache(maxsize=4)
def load_hed(device: str = "cpu", path: str | os.PathLike | None = None) -> HED:
    """The HED edge detector with the bundled BSDS500 weights, loaded once per device.

    Weights are stored fp16 (to keep the repository small) and computed in fp32.
    """
    from safetensors.torch import load_file

    path = Path(path) if path is not None else HED_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"HED weights not found at {path}; see weights/hed/README.md (scripts/convert_hed.py)")
    model = HED()
    model.load_state_dict({k: v.float() for k, v in load_file(path).items()}, strict=True)
    # channels_last: oneDNN's faster conv layout on CPU (~10 % at 256 px), same results.
    return model.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)


def edge_probability(image: im.ImageSource, device: str = "cpu") -> np.ndarray:
    """HED edge probability of an image at its own resolution: float32 (H, W) in [0, 1].

    The image is mirrored 16 px out on every side first: with the convs' zero padding the
    image border itself reads as an edge (a flat grey image gets p up to 0.38 near its
    border, 0.05 with the mirror), at the cost of ~25 % more compute at 256 px.
    """
    hed = load_hed(device)
    x = im.to_tensor(im.load_image(image), 3).to(device)  # (1, 3, H, W) in [-1, 1]
    h, w = x.shape[-2:]
    pad = min(HED_MIRROR, h - 1, w - 1)
    if pad > 0:
        x = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        p = hed(x)[0, 0, pad : pad + h, pad : pad + w]
    return np.ascontiguousarray(p.float().cpu().numpy())


def hed_postprocess(prob: np.ndarray, threshold: float = HED_THRESHOLD) -> np.ndarray:
    """pix2pix's post-processing of a HED map -> bool 1 px edge mask.

    Non-maximum suppression across the edge (as Dollar's edgesNms, with its 5 px border fade;
    the orientation from the structure tensor of the map), threshold, thinning to 1 px and
    removal of 8-connected pieces smaller than ``MIN_EDGE_PIXELS``.
    """
    e = _border_fade(prob.astype(np.float32), 5)
    edges = _nms(e) > threshold
    edges = skeletonize(edges)
    return _remove_small(edges, MIN_EDGE_PIXELS)


def canny_edges(rgb: np.ndarray) -> np.ndarray:
    """Canny edges with thresholds from the image's own gradient statistics -> bool 1 px mask.

    The high threshold keeps the strongest ~10 % of gradients (but never less than a step of
    ~12 grey levels, so flat images give nothing), the low one is 40 % of it; pieces smaller
    than ``MIN_EDGE_PIXELS`` are dropped as in the HED path.
    """
    gray = cv2.GaussianBlur(im.to_gray(im.array_to_rgb(rgb)), (0, 0), 1.0)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1)
    mag = cv2.magnitude(gx, gy)
    high = max(float(np.percentile(mag, 90)), 50.0)  # Sobel 3x3 gives 4x a step's height
    edges = cv2.Canny(gray, 0.4 * high, high, L2gradient=True) > 0
    return _remove_small(skeletonize(edges), MIN_EDGE_PIXELS)


# --------------------------------------------------------------------------- helpers


def _sketch_gray(value: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Anything a sketch can come as -> (grey flattened onto white, alpha or None if opaque)."""
    if value is None:
        raise NothingDrawn("nothing drawn yet")
    if isinstance(value, dict):
        if value.get("composite") is not None:
            return _sketch_gray(value["composite"])
        parts = [value.get("background"), *(value.get("layers") or [])]
        parts = [_rgba(p) for p in parts if p is not None]
        if not parts:
            raise NothingDrawn("nothing drawn yet")
        out = Image.fromarray(parts[0], "RGBA")
        for layer in parts[1:]:
            if layer.shape[:2] != parts[0].shape[:2]:
                layer = im.resize(layer, (parts[0].shape[1], parts[0].shape[0]))
            out = Image.alpha_composite(out, Image.fromarray(layer, "RGBA"))
        value = np.asarray(out)
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


def _crop(image: np.ndarray, box: tuple[int, int, int, int], fill: Any) -> np.ndarray:
    x0, y0, x1, y1 = box
    h, w = image.shape[:2]
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty crop box {box}")
    out = np.empty((y1 - y0, x1 - x0) + image.shape[2:], image.dtype)
    out[...] = fill
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = image[iy0:iy1, ix0:ix1]
    return out


def _fit_mask(ink: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Resample a bool mask over ``box`` (x0, y0, x1, y1 in pixel-edge coordinates, may be
    fractional and extend past the mask) to (size, size), keeping thin lines.

    The sampling grid is cv2.resize's (output pixel u covers [x0 + u/k, x0 + (u+1)/k)), so the
    result lines up with ``apply_box`` of the same box. Shrinking averages coverage over each
    output pixel's footprint and keeps what a quarter of a 1 px line crosses, so hairlines
    survive any reduction. Enlarging interpolates, rounds the source's pixel steps off with a
    blur of half a source pixel, and keeps what is 40 % covered, so diagonal steps stay
    connected. The lines are thinned afterwards anyway.
    """
    x0, y0, x1, y1 = box
    kx, ky = size / (x1 - x0), size / (y1 - y0)  # output pixels per source pixel
    k = min(kx, ky)
    mask = ink.astype(np.float32)
    if k < 1:
        a = 2 * round((1 / k - 1) / 2) + 1  # odd box filter ~ one output pixel's footprint
        mask = cv2.blur(mask, (a, a), borderType=cv2.BORDER_CONSTANT)
    # output (u, v) <- source centre coordinates (x0 + (u + 0.5) / kx - 0.5, ...)
    m = np.array([[1 / kx, 0, x0 + 0.5 / kx - 0.5], [0, 1 / ky, y0 + 0.5 / ky - 0.5]], np.float32)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    cover = cv2.warpAffine(mask, m, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if k < 1:
        return cover >= 0.25 * k
    if k > 1.5:
        cover = cv2.GaussianBlur(cover, (0, 0), k / 2)
    return cover >= 0.4


def _remove_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Drop 8-connected pieces of fewer than ``min_pixels`` pixels."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_pixels
    keep[0] = False  # background
    return keep[labels]


def _fill_small_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
    """Fill 4-connected holes of at most ``max_area`` pixels that do not touch the border."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    x, y, w, h, area = (stats[:, i] for i in range(5))
    H, W = mask.shape
    inner = (x > 0) & (y > 0) & (x + w < W) & (y + h < H)
    hole = inner & (area <= max_area)
    hole[0] = False  # label 0 is the ink itself
    return mask | hole[labels]


def _border_fade(e: np.ndarray, r: int) -> np.ndarray:
    """Fade edges linearly to 0 within ``r`` px of the border (image borders are not edges)."""
    h, w = e.shape
    ramp = lambda n: np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / r).astype(np.float32)  # noqa: E731
    return e * ramp(h)[:, None] * ramp(w)[None, :]


def _nms(e: np.ndarray, m: float = 1.01) -> np.ndarray:
    """Keep a pixel only where it is (within a factor ``m``) at least as strong as its two
    neighbours one pixel away across the edge, bilinearly interpolated."""
    # Edge normal from the structure tensor (gradient outer products, averaged over ~2 px):
    # the gradients on both flanks of a ridge point across it, so the average is reliable on
    # the crest too, where the gradient itself vanishes.
    s = cv2.GaussianBlur(e, (0, 0), 1.0)
    gx = cv2.Sobel(s, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(s, cv2.CV_32F, 0, 1)
    jxx, jyy, jxy = (cv2.GaussianBlur(g, (0, 0), 2.0) for g in (gx * gx, gy * gy, gx * gy))
    theta = 0.5 * np.arctan2(2.0 * jxy, jxx - jyy)
    c, sn = np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)
    h, w = e.shape
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    kw = dict(interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    e1 = cv2.remap(e, xs + c, ys + sn, **kw)
    e2 = cv2.remap(e, xs - c, ys - sn, **kw)
    return np.where((e * m >= e1) & (e * m >= e2), e, 0.0)
