"""Freehand augmentation: give a clean training drawing the faults of a hand drawing, then redraw it
in the canonical line style (``p2p_demo.edges.canonical_lines``, the app's own step), so what the
model sees stays in the app's line style while its lines wander like a mouse or a finger's.

The faults, each drawn with its own chance per drawing (sizes are for 256 px and scale with the side):

* overshoot: line ends run on past where they should stop, along their own direction (2-7 px);
* doubled strokes: a patch of the drawing is drawn a second time 2-4 px off (a sketchy re-stroke);
* gaps: a few short pieces of line are lifted out (the pen left the paper too early);
* width: a fatter pen before the redraw, which merges close lines and closes small loops;
* wobble: every line bent by a smooth random displacement field (up to ~3 px), two octaves of a
  coarse grid of offsets upsampled bicubically.

Only the input changes; its target stays as it is, as a user's drawing never lies exactly on the
colour boundaries. Randomness is a seed per drawing drawn from the training's CPU generator (the
one saved in checkpoints), so a resumed run draws the same drawings.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from skimage.morphology import skeletonize

from p2p_demo.edges import LineStyle, canonical_lines, round_pen
from train.dataset import to_signed

# chance of each fault in a drawing that is perturbed
P_OVERSHOOT, P_DOUBLE, P_GAPS, P_WIDTH, P_WOBBLE = 0.5, 0.3, 0.5, 0.25, 0.9
MAX_OVERSHOOTS = 16  # line ends run on at most this many per drawing


def perturb(edges: np.ndarray, rng: np.random.Generator, style: LineStyle) -> np.ndarray:
    """A canonical edge map (S, S) uint8 (0 ink, 255 paper) -> the same drawing as if drawn by hand,
    redrawn in ``style`` (same shape and dtype). A blank map comes back unchanged."""
    s = edges.shape[0]
    if edges.shape != (s, s) or edges.dtype != np.uint8:
        raise ValueError(f"perturb needs a square uint8 edge map, got {edges.shape} {edges.dtype}")
    ink = edges < 128
    if not ink.any():
        return edges.copy()
    k = s / 256  # fault sizes are for 256 px
    pen = style.stroke_width
    skeleton = skeletonize(ink)
    canvas = ink.astype(np.uint8)
    if rng.random() < P_OVERSHOOT:
        _overshoot(canvas, skeleton, rng, k, pen)
    if rng.random() < P_DOUBLE:
        _double(canvas, skeleton, rng, k)
    if rng.random() < P_GAPS:
        _gaps(canvas, skeleton, rng, k, pen)
    if rng.random() < P_WIDTH:
        canvas = cv2.dilate(canvas, round_pen(int(rng.integers(2, 4))))
    if rng.random() < P_WOBBLE:
        canvas = _wobble(canvas, rng, k)
    if not canvas.any():  # everything lifted out: keep the drawing as it was
        return edges.copy()
    return canonical_lines(canvas > 0, style)


def _ends(skeleton: np.ndarray) -> np.ndarray:
    """(n, 2) row, col of the skeleton's line ends: pixels with exactly one 8-neighbour."""
    neighbours = cv2.filter2D(skeleton.astype(np.uint8), -1, np.ones((3, 3), np.float32), borderType=cv2.BORDER_CONSTANT)
    return np.argwhere(skeleton & (neighbours == 2))  # itself + one


def _overshoot(canvas: np.ndarray, skeleton: np.ndarray, rng: np.random.Generator, k: float, pen: int) -> None:
    ends = _ends(skeleton)
    if not len(ends):
        return
    rng.shuffle(ends)
    ys, xs = np.nonzero(skeleton)
    for y, x in ends[:MAX_OVERSHOOTS]:
        if rng.random() < 0.5:
            continue
        near = (np.abs(ys - y) <= 4) & (np.abs(xs - x) <= 4)  # the line's last few px
        dy, dx = y - ys[near].mean(), x - xs[near].mean()
        norm = np.hypot(dy, dx)
        if norm < 0.5:  # an isolated dot: no direction
            continue
        length = rng.uniform(2, 7) * k
        tip = (int(round(x + dx / norm * length)), int(round(y + dy / norm * length)))
        cv2.line(canvas, (int(x), int(y)), tip, 1, thickness=pen)


def _double(canvas: np.ndarray, skeleton: np.ndarray, rng: np.random.Generator, k: float) -> None:
    ys, xs = np.nonzero(skeleton)
    s = canvas.shape[0]
    yy, xx = np.mgrid[:s, :s]
    for _ in range(int(rng.integers(1, 3))):
        i = int(rng.integers(len(ys)))
        radius = rng.uniform(20, 50) * k
        patch = (canvas > 0) & ((yy - ys[i]) ** 2 + (xx - xs[i]) ** 2 <= radius ** 2)
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(2, 4) * k
        shift = np.float32([[1, 0, dist * np.cos(angle)], [0, 1, dist * np.sin(angle)]])
        moved = cv2.warpAffine(patch.astype(np.uint8), shift, (s, s), flags=cv2.INTER_NEAREST)
        np.maximum(canvas, moved, out=canvas)


def _gaps(canvas: np.ndarray, skeleton: np.ndarray, rng: np.random.Generator, k: float, pen: int) -> None:
    ys, xs = np.nonzero(skeleton)
    for _ in range(int(rng.integers(1, 5))):
        i = int(rng.integers(len(ys)))
        radius = max(pen / 2 + 1, rng.uniform(2.5, 4.5) * k)  # wider than the line, or nothing breaks
        cv2.circle(canvas, (int(xs[i]), int(ys[i])), int(round(radius)), 0, thickness=-1)


def _wobble(canvas: np.ndarray, rng: np.random.Generator, k: float) -> np.ndarray:
    s = canvas.shape[0]
    field = np.zeros((2, s, s), np.float32)
    for cells, amplitude in ((int(rng.integers(3, 7)), rng.uniform(0.5, 2.5)), (int(rng.integers(10, 20)), rng.uniform(0, 0.8))):
        coarse = rng.normal(0.0, amplitude * k, (2, cells, cells)).astype(np.float32)
        field += np.stack([cv2.resize(c, (s, s), interpolation=cv2.INTER_CUBIC) for c in coarse])
    yy, xx = np.mgrid[:s, :s].astype(np.float32)
    bent = cv2.remap(canvas.astype(np.float32), xx + field[0], yy + field[1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return (bent > 0.5).astype(np.uint8)


def perturb_all(edges: np.ndarray, seed: int, style: LineStyle) -> np.ndarray:
    """(N, S, S) edge maps -> each redrawn as by hand, drawing i with its own seed (seed, i): the
    held-out split as a hand-drawn test (``python -m train evaluate --freehand``)."""
    return np.stack([perturb(e, np.random.default_rng([seed, i]), style) for i, e in enumerate(edges)])


class Freehand:
    """The augmentation on a training batch of signed, channel-repeated edge maps (n, C, S, S):
    each drawing is perturbed with chance ``p`` (``TrainConfig.freehand``). Draws the same number
    of random numbers from ``generator`` whatever it decides, so the stream stays aligned."""

    def __init__(self, style: LineStyle | None, p: float) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"freehand must be a chance in [0, 1], got {p}")
        if p and style is None:
            raise ValueError("freehand needs edge-map inputs with a line style (the dataset's manifest has none)")
        self.style, self.p = style, p

    @property
    def active(self) -> bool:
        return self.p > 0

    def __call__(self, a: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not self.active:
            return a
        n = a.shape[0]
        chosen = torch.rand(n, generator=generator) < self.p
        seeds = torch.randint(0, 2**31 - 1, (n,), generator=generator)
        if not chosen.any():
            return a
        out = a.clone()
        paper = (a[:, 0] > 0).cpu().numpy()
        for i in torch.nonzero(chosen).flatten().tolist():
            edges = np.where(paper[i], 255, 0).astype(np.uint8)
            redrawn = perturb(edges, np.random.default_rng(int(seeds[i])), self.style)
            out[i] = to_signed(torch.from_numpy(redrawn).to(a.device)).to(a.dtype)
        return out
