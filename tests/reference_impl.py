"""A plain, independent re-implementation of the two original pix2pix generators, for tests only.

Written from the published architectures (the pix2pix paper's U-Net; the authors' and the Hub's
checkpoint layouts, described below), deliberately in a different shape from p2p_demo/nets.py, so
that tests can check that our loader reproduces what the original networks compute from the same
weights:

* ``AuthorsUnet``: the authors' recursive skip-connection U-Net (``unet_256`` / ``unet_128``):
  each level is a ``Sequential`` called ``model``; every level but the outermost returns
  ``torch.cat([x, self.model(x)], 1)``; the down path starts with an *in-place* LeakyReLU, so the
  skip carries the activated tensor, exactly like the original code; plain ``nn.BatchNorm2d``.
* ``HugganUnet``: the Hub's ``GeneratorUNet`` with ``UNetDown`` / ``UNetUp`` blocks and a
  ``final`` Sequential (upsample, zero-pad, conv, tanh).

Dropout is the only randomness. ``ReplayDropout`` behaves like ``nn.Dropout`` unless a test hands it
a ``mask_source`` (shape -> bool keep-mask), so a test can feed both networks identical masks;
``enabled = False`` makes it the identity.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

MaskSource = Callable[[torch.Size], torch.Tensor]


class ReplayDropout(nn.Module):
    """nn.Dropout(p) whose keep-mask can come from outside (one mask per call, batch of 1)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p
        self.enabled = True
        self.mask_source: MaskSource | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.mask_source is None:
            return F.dropout(x, self.p, self.training)
        keep = self.mask_source(x.shape[1:]).to(x.dtype)  # (C, H, W), broadcast over the batch
        return x * keep / (1 - self.p)


# --------------------------------------------------------------------------------------------
# The authors' U-Net


class SkipLevel(nn.Module):
    """One level of the authors' U-Net. ``child`` is the next level inward (None = innermost)."""

    def __init__(self, outer_ch: int, inner_ch: int, *, child: nn.Module | None, first_ch: int | None = None,
                 outermost: bool = False, instance_norm: bool = False, with_dropout: bool = False) -> None:
        super().__init__()
        self.outermost = outermost
        conv_bias = instance_norm  # BatchNorm carries its own shift; the original drops the conv bias

        def make_norm(ch: int) -> nn.Module:
            if instance_norm:
                return nn.InstanceNorm2d(ch)
            return nn.BatchNorm2d(ch)

        down_in = outer_ch if first_ch is None else first_ch
        down_conv = nn.Conv2d(down_in, inner_ch, kernel_size=4, stride=2, padding=1, bias=conv_bias)

        parts: list[nn.Module]
        if outermost:
            up_conv = nn.ConvTranspose2d(inner_ch * 2, outer_ch, kernel_size=4, stride=2, padding=1)
            parts = [down_conv, child, nn.ReLU(inplace=True), up_conv, nn.Tanh()]
        elif child is None:
            up_conv = nn.ConvTranspose2d(inner_ch, outer_ch, kernel_size=4, stride=2, padding=1, bias=conv_bias)
            parts = [nn.LeakyReLU(0.2, inplace=True), down_conv,
                     nn.ReLU(inplace=True), up_conv, make_norm(outer_ch)]
        else:
            up_conv = nn.ConvTranspose2d(inner_ch * 2, outer_ch, kernel_size=4, stride=2, padding=1, bias=conv_bias)
            parts = [nn.LeakyReLU(0.2, inplace=True), down_conv, make_norm(inner_ch), child,
                     nn.ReLU(inplace=True), up_conv, make_norm(outer_ch)]
            if with_dropout:
                parts.append(ReplayDropout(0.5))
        self.model = nn.Sequential(*parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class AuthorsUnet(nn.Module):
    """``unet_256`` is num_downs=8, ``unet_128`` is num_downs=7; state_dict keys ``model.model....``."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, num_downs: int = 8, ngf: int = 64,
                 instance_norm: bool = False, use_dropout: bool = True) -> None:
        super().__init__()
        opts = dict(instance_norm=instance_norm)
        # Built from the inside out: the 1x1 bottleneck first, the image-sized level last.
        level = SkipLevel(ngf * 8, ngf * 8, child=None, **opts)
        for _ in range(num_downs - 5):
            level = SkipLevel(ngf * 8, ngf * 8, child=level, with_dropout=use_dropout, **opts)
        level = SkipLevel(ngf * 4, ngf * 8, child=level, **opts)
        level = SkipLevel(ngf * 2, ngf * 4, child=level, **opts)
        level = SkipLevel(ngf, ngf * 2, child=level, **opts)
        self.model = SkipLevel(out_ch, ngf, child=level, first_ch=in_ch, outermost=True, **opts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# --------------------------------------------------------------------------------------------
# The huggan U-Net


class UNetDown(nn.Module):
    def __init__(self, cin: int, cout: int, normalize: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=False)]
        if normalize:
            seq.append(nn.InstanceNorm2d(cout))
        seq.append(nn.LeakyReLU(0.2))
        if dropout:
            seq.append(ReplayDropout(dropout))
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class UNetUp(nn.Module):
    def __init__(self, cin: int, cout: int, dropout: float = 0.0) -> None:
        super().__init__()
        seq: list[nn.Module] = [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.InstanceNorm2d(cout),
                                nn.ReLU(inplace=True)]
        if dropout:
            seq.append(ReplayDropout(dropout))
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.model(x), skip), 1)


class HugganUnet(nn.Module):
    """The Hub's generator: 8 downs, 7 ups, ``final``; 17 state_dict keys at any width."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, width: int = 64) -> None:
        super().__init__()
        w = width
        self.down1 = UNetDown(in_ch, w, normalize=False)
        self.down2 = UNetDown(w, w * 2)
        self.down3 = UNetDown(w * 2, w * 4)
        self.down4 = UNetDown(w * 4, w * 8, dropout=0.5)
        self.down5 = UNetDown(w * 8, w * 8, dropout=0.5)
        self.down6 = UNetDown(w * 8, w * 8, dropout=0.5)
        self.down7 = UNetDown(w * 8, w * 8, dropout=0.5)
        self.down8 = UNetDown(w * 8, w * 8, normalize=False, dropout=0.5)
        self.up1 = UNetUp(w * 8, w * 8, dropout=0.5)
        self.up2 = UNetUp(w * 16, w * 8, dropout=0.5)
        self.up3 = UNetUp(w * 16, w * 8, dropout=0.5)
        self.up4 = UNetUp(w * 16, w * 8, dropout=0.5)
        self.up5 = UNetUp(w * 16, w * 4)
        self.up6 = UNetUp(w * 8, w * 2)
        self.up7 = UNetUp(w * 4, w)
        self.final = nn.Sequential(
            nn.Upsample(scale_factor=2),
            nn.ZeroPad2d((1, 0, 1, 0)),
            nn.Conv2d(w * 2, out_ch, 4, padding=1),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for down in (self.down1, self.down2, self.down3, self.down4, self.down5, self.down6, self.down7):
            h = down(h)
            skips.append(h)
        h = self.down8(h)
        for up, skip in zip((self.up1, self.up2, self.up3, self.up4, self.up5, self.up6, self.up7), reversed(skips)):
            h = up(h, skip)
        return self.final(h)


def randomize(net: nn.Module, seed: int, std: float = 0.02) -> nn.Module:
    """Seeded weights as in the original init (conv N(0, std), norm weight N(1, std)), with
    non-zero biases and non-trivial BatchNorm running statistics so every parameter matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + torch.randn(m.weight.shape, generator=g) * std)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.05)
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(1234)
    return net


@torch.no_grad()
def calibrate_batchnorm(net: nn.Module, inputs: list[torch.Tensor]) -> nn.Module:
    """Give BatchNorm running statistics that match real activations (what training leaves
    behind), so eval-mode outputs depend on them in a meaningful way. Dropout is off meanwhile."""
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    drops = [m for m in net.modules() if isinstance(m, ReplayDropout)]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    for d in drops:
        d.enabled = False
    net.train()
    for x in inputs:
        net(x.clone())
    for m, (momentum, count) in zip(norms, saved):
        m.momentum = momentum
        m.num_batches_tracked.copy_(count + len(inputs))
    for d in drops:
        d.enabled = True
    return net


def set_dropout(net: nn.Module, *, enabled: bool, mask_source: MaskSource | None = None) -> None:
    for m in net.modules():
        if isinstance(m, ReplayDropout):
            m.enabled = enabled
            m.mask_source = mask_source
