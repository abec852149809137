"""Photos -> edge maps, as pix2pix's edges2shoes inputs were made (HED, or Canny for speed)."""

from __future__ import annotations

import cv2
import numpy as np
from skimage.morphology import skeletonize

from .. import image as im
from .hed import MIN_EDGE_PIXELS, edge_probability, hed_postprocess
from .style import EdgeMap, LineStyle, NothingDrawn, _fit_mask, _remove_small, canonical_lines, frame_box


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
