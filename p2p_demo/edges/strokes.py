"""Vector strokes: the canvas's drawing as vectors, framed and redrawn from them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .style import EdgeMap, LineStyle, NothingDrawn

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
