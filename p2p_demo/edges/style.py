"""The canonical line style and the steps every edge map ends with: frame, resample, redraw.

Sketches (``sketch``), vectors (``strokes``) and photos (``photo``) all end here, so what a model
sees at serve time is what it saw in training.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
from skimage.morphology import skeletonize

from .. import image as im
from ..errors import P2PError
from ..files import strict_from_dict


class NothingDrawn(P2PError, ValueError):
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
