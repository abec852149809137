"""What only training needs of the networks: the reference's PatchGAN discriminator and its init.

The generators (what serving needs too) are ``p2p_demo.nets``'s; ``init_weights`` also starts the
random generators of tests and benchmarks.
"""

from __future__ import annotations

import torch
from torch import nn

from p2p_demo.nets import NORMS


class PatchDiscriminator(nn.Module):
    """The reference PatchGAN. n_layers 0 is the 1x1 PixelGAN; 1..5 give 16..286 px patches.

    Returns logits (no sigmoid), one per patch.
    """

    RECEPTIVE_FIELD = {0: 1, 1: 16, 2: 34, 3: 70, 4: 142, 5: 286}

    def __init__(self, in_channels: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        if n_layers not in self.RECEPTIVE_FIELD:
            raise ValueError(f"n_layers must be in 0..5, got {n_layers}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.n_layers = n_layers
        bias = norm == "instance"

        def norm_layer(ch: int) -> nn.Module:
            return nn.BatchNorm2d(ch) if norm == "batch" else nn.InstanceNorm2d(ch)

        if n_layers == 0:  # PixelGAN: 1x1 convs only
            layers: list[nn.Module] = [
                nn.Conv2d(in_channels, ndf, 1), nn.LeakyReLU(0.2, True),
                nn.Conv2d(ndf, ndf * 2, 1, bias=bias), norm_layer(ndf * 2), nn.LeakyReLU(0.2, True),
                nn.Conv2d(ndf * 2, 1, 1, bias=bias),
            ]
        else:
            layers = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            mult = 1
            for n in range(1, n_layers):
                prev, mult = mult, min(2**n, 8)
                layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=bias),
                           norm_layer(ndf * mult), nn.LeakyReLU(0.2, True)]
            prev, mult = mult, min(2**n_layers, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=bias),
                       norm_layer(ndf * mult), nn.LeakyReLU(0.2, True),
                       nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.model = nn.Sequential(*layers)

    @property
    def receptive_field(self) -> int:
        return self.RECEPTIVE_FIELD[self.n_layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """The reference init: conv weights N(0, std), norm weights N(1, std), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
