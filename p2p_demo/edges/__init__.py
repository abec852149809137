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

from .hed import HED, HED_WEIGHTS, edge_probability, hed_postprocess, load_hed
from .photo import canny_edges, photo_to_edges
from .sketch import normalize_sketch, sketch_ink
from .strokes import Stroke, Strokes, normalize_strokes, strokes_box
from .style import EdgeMap, LineStyle, NothingDrawn, apply_box, canonical_lines, frame_box, round_pen

__all__ = ["EdgeMap", "HED", "HED_WEIGHTS", "LineStyle", "NothingDrawn", "Stroke", "Strokes", "apply_box",
           "canny_edges", "canonical_lines", "edge_probability", "frame_box", "hed_postprocess", "load_hed",
           "normalize_sketch", "normalize_strokes", "photo_to_edges", "round_pen", "sketch_ink",
           "strokes_box"]
