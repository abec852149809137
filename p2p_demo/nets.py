"""The networks: pix2pix U-Net generators (two checkpoint layouts). The PatchGAN discriminator and
the reference init are training's (``train/discriminator.py``).

Two things make these differ from a plain port of the reference:

* ``SampleNorm`` is a ``BatchNorm2d`` (same state-dict keys as the reference) that, in the
  reference's *test mode*, normalises every image with its own statistics. The reference runs its
  generator in train mode at batch 1 at test time, which is exactly per-image statistics; doing it
  per image explicitly keeps that behaviour at any batch size, so n samples rendered in one batch
  equal the same samples rendered one by one.
* ``SeededDropout`` applies the dropout masks it is given, one per sample (drawn from each
  sample's seed by ``p2p_demo.masks``), for the same reason: the masks of sample k do not depend
  on what else is in the batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .files import strict_from_dict

NORMS = ("batch", "instance")
LAYOUTS = ("reference", "huggan")
UPSAMPLES = ("transpose", "resize")


@dataclass
class GeneratorConfig:
    """Everything needed to build a generator; saved as config.json beside the weights."""

    in_channels: int = 3
    out_channels: int = 3
    ngf: int = 64
    num_downs: int = 8  # 8 = reference unet_256 (1x1 bottleneck at 256 px), 7 = unet_128
    norm: str = "batch"  # batch | instance
    dropout: bool = True
    dropout_p: float = 0.5  # the reference's rate; the chance each decoder unit is dropped
    layout: str = "reference"  # reference (authors' .pth keys) | huggan (Hub pytorch_model.bin keys)
    # The decoder's x2 steps: the reference's 4x4 stride-2 transposed convolution, or "resize"
    # (nearest x2 then a 3x3 convolution; Odena et al. 2016), which cannot draw checkerboards.
    # Our own format only: the authors' and huggan layouts are transposed convolutions.
    upsample: str = "transpose"
    # Channel dropout (Tompson et al. 2015): a mask element drops a whole feature map, so a sample's
    # masks change the picture over areas (a colour, a shading) rather than in patches a few cells
    # wide. Our own format only, like "resize".
    channel_dropout: bool = False
    # How many decoder levels drop units, counted outward from the bottleneck; 0 = the reference's
    # (every ngf*8 level but the innermost: num_downs - 5, three in unet_256). More reaches out to
    # the ngf*4, ngf*2 and ngf levels, whose maps are finer (at most num_downs - 2). No weights:
    # the same weights sample differently. Our own format only.
    dropout_levels: int = 0

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.num_downs < 5:
            raise ValueError(f"num_downs must be at least 5, got {self.num_downs}")
        if not 0.0 < self.dropout_p < 1.0:
            raise ValueError(f"dropout_p must be between 0 and 1 (exclusive), got {self.dropout_p}")
        if self.upsample not in UPSAMPLES:
            raise ValueError(f"upsample must be one of {UPSAMPLES}, got {self.upsample!r}")
        if self.layout == "huggan" and self.upsample != "transpose":
            raise ValueError("the huggan layout upsamples with transposed convolutions only")
        if self.layout == "huggan" and self.channel_dropout:
            raise ValueError("the huggan layout drops units, not channels")
        most = self.most_dropout_levels(self.num_downs)
        if not 0 <= self.dropout_levels <= most:
            raise ValueError(f"dropout_levels must be 0 (the reference's) to num_downs - 2 = {most}, "
                             f"got {self.dropout_levels}")
        if self.layout == "huggan" and self.dropout_levels:
            raise ValueError("the huggan layout's dropout sits where the reference's does (dropout_levels 0)")
        if self.layout == "huggan" and (self.num_downs, self.norm) != (8, "instance"):
            raise ValueError("the huggan layout is fixed: num_downs=8, norm='instance'")

    @staticmethod
    def most_dropout_levels(num_downs: int) -> int:
        """The decoder levels that can hold dropout: all but the innermost and the outermost."""
        return num_downs - 2

    @property
    def dropout_depth(self) -> int:
        """The number of decoder levels with dropout layers (0 when dropout is off)."""
        if not self.dropout:
            return 0
        return self.dropout_levels or self.num_downs - 5

    @property
    def multiple(self) -> int:
        """Height and width must be multiples of this."""
        return 2**self.num_downs

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        return strict_from_dict(cls, d, "generator config keys")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device a generator runs on: ``device`` as given, or for None / ``"auto"`` CUDA when
    there is a GPU, else the CPU (the Renderer, the CLI and training all choose it this way)."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# --------------------------------------------------------------------------------------------
# Sampling-aware building blocks


class SampleNorm(nn.BatchNorm2d):
    """BatchNorm2d whose statistics source is chosen by the owning generator.

    ``stats = "batch"``: ordinary BatchNorm (training, and eval with running stats when
    ``self.training`` is False). ``stats = "per_image"``: each image normalised with its own
    mean/var, scaled by this layer's affine weights; running stats are neither used nor updated.
    """

    stats: str = "batch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stats == "per_image":
            return F.instance_norm(x, weight=self.weight, bias=self.bias, use_input_stats=True, eps=self.eps)
        return super().forward(x)


class SeededDropout(nn.Module):
    """Dropout that applies the masks it is given: seeded, batch-independent samples.

    ``masks``, when set, is a ready ``(B, C, H, W)`` multiplier already holding the ``1 / (1 - p)``
    scale (ones = dropout off), drawn by ``p2p_demo.masks`` from each sample's seed and this layer's
    number ``layer`` (``number_dropout_layers``). Eager PyTorch (``masks.seeded_forward``), an ONNX
    export and a captured CUDA graph (``p2p_demo.fast``, where the masks are graph inputs) all
    sample this one way. Without masks it is ordinary ``F.dropout`` (training; ``F.dropout2d``, whole
    feature maps, when ``channel``), and ``enabled = False`` turns it into the identity
    (deterministic rendering).
    """

    def __init__(self, p: float = 0.5, channel: bool = False) -> None:
        super().__init__()
        self.p = p
        self.channel = channel
        self.layer = 0
        self.enabled = True
        self.masks: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.masks is not None:
            return x * self.masks  # (B, C, H, W): 0 or 1 / (1 - p)
        if not self.enabled:
            return x
        return (F.dropout2d if self.channel else F.dropout)(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, layer={self.layer}" + (", channel" if self.channel else "")


def number_dropout_layers(module: nn.Module) -> None:
    """Number a network's SeededDropout layers 0, 1, ... in ``modules()`` order (their hash key)."""
    for i, m in enumerate(m for m in module.modules() if isinstance(m, SeededDropout)):
        m.layer = i


def _norm(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return SampleNorm(channels)
    return nn.InstanceNorm2d(channels, affine=False)


class _SamplingMixin:
    """Inference controls shared by both generator layouts."""

    def _modules_of(self, kind: type) -> Iterator[nn.Module]:
        return (m for m in self.modules() if isinstance(m, kind))  # type: ignore[attr-defined]

    def set_inference_mode(self, *, per_image_stats: bool = True, dropout: bool = True) -> None:
        """Choose how normalisation and dropout behave outside training.

        The reference's test mode is per-image statistics with dropout on; that is our default.
        ``per_image_stats=False`` uses BatchNorm running statistics (the reference's ``--eval``).
        """
        for m in self._modules_of(SampleNorm):
            m.stats = "per_image" if per_image_stats else "batch"
        for m in self._modules_of(SeededDropout):
            m.enabled = dropout

    def set_training_mode(self) -> None:
        for m in self._modules_of(SampleNorm):
            m.stats = "batch"
        for m in self._modules_of(SeededDropout):
            m.enabled = True
            m.masks = None

    @property
    def has_dropout(self) -> bool:
        return any(True for _ in self._modules_of(SeededDropout))


# --------------------------------------------------------------------------------------------
# The reference layout: recursive skip blocks, keys "model.model.1.model.3...."


# Nearest x2 then a 3x3 convolution is a 4x4 stride-2 transposed convolution whose taps are tied:
# in one dimension, output 2i reads (v0 x[i-1], (v1+v2) x[i]) and 2i+1 reads ((v0+v1) x[i], v2 x[i+1]),
# so transposed tap k (row) is the sum of the resize taps marked in its row. In 2-D it is TAPS (x) TAPS.
RESIZE_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def resize_as_transpose(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, 3, 3) kernel of nearest x2 + conv -> the (in, out, 4, 4) transposed kernel computing the same.

    Written as two matmuls with a constant (not einsum) so that an ONNX export keeps the 3x3
    weights and any runtime folds the 4x4 kernel once at load."""
    taps = torch.tensor(RESIZE_TAPS, dtype=weight.dtype, device=weight.device)
    out, cin = weight.shape[:2]
    k = torch.matmul(torch.matmul(taps, weight.reshape(out * cin, 3, 3)), taps.t())  # (out*in, 4, 4)
    return k.reshape(out, cin, 4, 4).transpose(0, 1)


class ResizeUp(nn.Sequential):
    """The resize decoder step (GeneratorConfig.upsample "resize"): nearest x2 + 3x3 convolution,
    state-dict keys ``.1.weight`` / ``.1.bias``. It runs as the transposed convolution it equals: the
    same pictures, 4 multiply-adds per output pixel and channel pair instead of 9."""

    def __init__(self, cin: int, cout: int, bias: bool):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self[1]
        return F.conv_transpose2d(x, resize_as_transpose(conv.weight), conv.bias, stride=2, padding=1)


def _up_conv(cin: int, cout: int, bias: bool, upsample: str) -> nn.Module:
    """The decoder's x2 step (see GeneratorConfig.upsample)."""
    if upsample == "resize":
        return ResizeUp(cin, cout, bias)
    return nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias)


class _SkipBlock(nn.Module):
    """One U-Net level: down -> submodule -> up, returning cat([x, up], 1) except outermost."""

    def __init__(
        self,
        outer: int,
        inner: int,
        *,
        in_channels: int | None = None,
        sub: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: str = "batch",
        dropout: float = 0.0,
        channel_dropout: bool = False,
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        self.outermost = outermost
        in_channels = outer if in_channels is None else in_channels
        bias = norm == "instance"  # BatchNorm has its own shift
        down = nn.Conv2d(in_channels, inner, 4, 2, 1, bias=bias)
        if outermost:
            up = _up_conv(inner * 2, outer, True, upsample)
            layers = [down, sub, nn.ReLU(True), up, nn.Tanh()]
        elif innermost:
            up = _up_conv(inner, outer, bias, upsample)
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up, _norm(norm, outer)]
        else:
            up = _up_conv(inner * 2, outer, bias, upsample)
            layers = [nn.LeakyReLU(0.2, True), down, _norm(norm, inner), sub,
                      nn.ReLU(True), up, _norm(norm, outer)]
            if dropout:
                layers.append(SeededDropout(dropout, channel_dropout))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        # As in the reference, the LeakyReLU at the head of self.model works in place, so the skip
        # carries LeakyReLU(x), not x: needed to reproduce the authors' checkpoints exactly.
        y = self.model(x)
        return torch.cat([x, y], 1)


class UNetGenerator(_SamplingMixin, nn.Module):
    """The reference U-Net (``unet_256`` with num_downs=8, ``unet_128`` with 7), any ngf."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        if config.layout != "reference":
            raise ValueError("UNetGenerator builds the reference layout; use build_generator()")
        self.config = config
        c, ngf, norm = config, config.ngf, config.norm
        up = c.upsample
        block = _SkipBlock(ngf * 8, ngf * 8, innermost=True, norm=norm, upsample=up)
        # The levels between the bottleneck and the outermost, inside out: (outer, inner) channels.
        levels = [(ngf * 8, ngf * 8)] * (c.num_downs - 5) + [(ngf * 4, ngf * 8), (ngf * 2, ngf * 4), (ngf, ngf * 2)]
        for depth, (outer, inner) in enumerate(levels, 1):
            p = c.dropout_p if depth <= c.dropout_depth else 0.0
            block = _SkipBlock(outer, inner, sub=block, norm=norm, dropout=p, channel_dropout=c.channel_dropout,
                               upsample=up)
        self.model = _SkipBlock(c.out_channels, ngf, in_channels=c.in_channels, sub=block,
                                outermost=True, norm=norm, upsample=up)
        number_dropout_layers(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# --------------------------------------------------------------------------------------------
# The huggan layout: flat down1..down8 / up1..up7 / final, keys "downN.model.0.weight"


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int, *, normalize: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=False)]
        if normalize:
            layers.append(nn.InstanceNorm2d(cout))
        layers.append(nn.LeakyReLU(0.2))
        if dropout:
            layers.append(SeededDropout(dropout))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
            nn.InstanceNorm2d(cout),
            nn.ReLU(inplace=True),
        ]
        if dropout:
            layers.append(SeededDropout(dropout))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model(x), skip], 1)


class HugganUNet(_SamplingMixin, nn.Module):
    """The generator of the Hub's ``huggan/pix2pix-*`` repositories (17 keys, 54.40 M params)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        if config.layout != "huggan":
            raise ValueError("HugganUNet builds the huggan layout; use build_generator()")
        self.config = config
        d, g = (config.dropout_p if config.dropout else 0.0), config.ngf
        self.down1 = _Down(config.in_channels, g, normalize=False)
        self.down2 = _Down(g, g * 2)
        self.down3 = _Down(g * 2, g * 4)
        self.down4 = _Down(g * 4, g * 8, dropout=d)
        self.down5 = _Down(g * 8, g * 8, dropout=d)
        self.down6 = _Down(g * 8, g * 8, dropout=d)
        self.down7 = _Down(g * 8, g * 8, dropout=d)
        self.down8 = _Down(g * 8, g * 8, normalize=False, dropout=d)
        self.up1 = _Up(g * 8, g * 8, dropout=d)
        self.up2 = _Up(g * 16, g * 8, dropout=d)
        self.up3 = _Up(g * 16, g * 8, dropout=d)
        self.up4 = _Up(g * 16, g * 8, dropout=d)
        self.up5 = _Up(g * 16, g * 4)
        self.up6 = _Up(g * 8, g * 2)
        self.up7 = _Up(g * 4, g)
        self.final = nn.Sequential(
            nn.Upsample(scale_factor=2),
            nn.ZeroPad2d((1, 0, 1, 0)),
            nn.Conv2d(g * 2, config.out_channels, 4, padding=1),
            nn.Tanh(),
        )
        number_dropout_layers(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.down1(x)
        d2 = self.down2(d1)
        d3 = self.down3(d2)
        d4 = self.down4(d3)
        d5 = self.down5(d4)
        d6 = self.down6(d5)
        d7 = self.down7(d6)
        d8 = self.down8(d7)
        u = self.up1(d8, d7)
        u = self.up2(u, d6)
        u = self.up3(u, d5)
        u = self.up4(u, d4)
        u = self.up5(u, d3)
        u = self.up6(u, d2)
        u = self.up7(u, d1)
        return self.final(u)


Generator = UNetGenerator | HugganUNet


def build_generator(config: GeneratorConfig) -> Generator:
    if config.layout == "reference":
        return UNetGenerator(config)
    return HugganUNet(config)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
