"""The two published pix2pix generators, written for the tests from REFERENCE.md's layer lists alone.

The tests load these networks' weights with ``p2p_demo`` and check that it computes the same
pictures. For that check to mean anything this file must not share a shape with
``p2p_demo/nets.py``: there are no block classes here. Each network is a *table* of layers,
transcribed from the layer lists in the project's reference notes (``shared/REFERENCE.md``), and
one flat ``forward`` that walks the table (the encoder down, the decoder up, the skips kept in a
list). Normalisation, activations and dropout are plain function calls; the modules only hold the
weights, under the key names of the published checkpoints.

* ``AuthorsUnet``: the PyTorch reference's ``unet_256`` (``num_downs=8``) / ``unet_128`` (7).
  Encoder: C(in→ngf) without norm, then [LeakyReLU 0.2, Conv, BatchNorm] per level, the innermost
  [LeakyReLU, Conv] without norm. Decoder: innermost [ReLU, ConvT, BN], then [ReLU, ConvT, BN,
  Dropout 0.5] for every 8·ngf→8·ngf level but the innermost, then ConvT + BN for the last three
  levels before the outermost [ReLU, ConvT (bias), Tanh]. Convs are k4 s2 p1; conv bias only with
  InstanceNorm. Each level but the outermost returns cat([its input, its output]). One fact beyond
  the layer list, from the authors' code: the level's LeakyReLU works *in place*, so the skip
  carries the activated input. Keys: level k's layers sit at the indices of the authors'
  ``Sequential`` (see ``_AUTHORS_INDEX``), nested one ``model.<child index>`` per level.
* ``HugganUnet``: the Hub's ``huggan/pix2pix-*`` generator: down1..down8 (conv → [InstanceNorm]
  → LeakyReLU 0.2 → [Dropout]), up1..up7 (ConvT → InstanceNorm → ReLU → [Dropout], then
  cat([up, skip])), ``final`` (nearest ×2, ZeroPad2d((1, 0, 1, 0)), conv k4 p1 with bias, Tanh).
  Every other conv k4 s2 p1 without bias; InstanceNorm without affine parameters.

Dropout is the only randomness. ``set_dropout(net, enabled=..., mask_source=...)`` turns it off,
or has it take each keep-mask from ``mask_source`` (shape (C, H, W) -> bool), called once per
dropout layer in forward order, so a test can feed the same masks to both implementations.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

MaskSource = Callable[[torch.Size], torch.Tensor]

# Where the authors' Sequential of a level keeps each layer (parameter-free layers hold indices too).
#   outermost: [Conv, child, ReLU, ConvT, Tanh]
#   middle:    [LeakyReLU, Conv, Norm, child, ReLU, ConvT, Norm, (Dropout)]
#   innermost: [LeakyReLU, Conv, ReLU, ConvT, Norm]
_AUTHORS_INDEX = {
    "outermost": {"conv": 0, "child": 1, "convt": 3},
    "middle": {"conv": 1, "conv_norm": 2, "child": 3, "convt": 5, "convt_norm": 6},
    "innermost": {"conv": 1, "convt": 3, "convt_norm": 4},
}


def _holder(layers: dict[int, nn.Module]) -> nn.ModuleDict:
    """A container whose state-dict keys are ``<index>.<param>``, like an nn.Sequential's."""
    return nn.ModuleDict({str(i): m for i, m in layers.items()})


class _DropoutState(nn.Module):
    """Dropout settings shared by the whole network (not a layer: it has no position in the keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True
        self.p = 0.5
        self.mask_source: MaskSource | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.mask_source is None:
            return F.dropout(x, self.p, self.training)
        keep = self.mask_source(x.shape[1:]).to(x.dtype)  # (C, H, W), the same for every batch item
        return x * keep / (1 - self.p)


# --------------------------------------------------------------------------------------------
# The authors' U-Net


class AuthorsUnet(nn.Module):
    """``unet_256`` is num_downs=8, ``unet_128`` is num_downs=7; state_dict keys ``model.model....``."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, num_downs: int = 8, ngf: int = 64,
                 instance_norm: bool = False, use_dropout: bool = True) -> None:
        super().__init__()
        self.instance_norm = instance_norm
        self.drop = _DropoutState()
        # The encoder's channels, level 0 (image side) to the innermost: ngf, 2, 4, 8, 8, ... x ngf.
        width = [ngf, ngf * 2, ngf * 4] + [ngf * 8] * (num_downs - 3)
        self.n_levels = num_downs
        # Level k's table row: its down conv, its up conv and whether it has a norm / dropout.
        self.rows: list[dict] = []
        for k in range(num_downs):
            kind = "outermost" if k == 0 else "innermost" if k == num_downs - 1 else "middle"
            down_in = in_ch if k == 0 else width[k - 1]
            up_in = width[k] if kind == "innermost" else width[k] * 2  # the innermost has no skip to widen it
            up_out = out_ch if k == 0 else width[k - 1]
            self.rows.append({
                "kind": kind,
                "conv": nn.Conv2d(down_in, width[k], 4, 2, 1, bias=instance_norm),
                "conv_norm": self._norm(width[k]) if kind == "middle" else None,
                "convt": nn.ConvTranspose2d(up_in, up_out, 4, 2, 1, bias=(k == 0) or instance_norm),
                "convt_norm": self._norm(up_out) if k > 0 else None,
                "dropout": use_dropout and kind == "middle" and width[k - 1] == width[k] == ngf * 8,
            })
        # Nest the weights under the checkpoint's names, innermost first: level k holds level k + 1.
        child: nn.Module | None = None
        for k in reversed(range(num_downs)):
            row = self.rows[k]
            index = _AUTHORS_INDEX[row["kind"]]
            layers = {index[name]: row[name] for name in ("conv", "conv_norm", "convt", "convt_norm")
                      if name in index and row[name] is not None}
            if child is not None:
                layers[index["child"]] = child
            level = nn.Module()
            level.model = _holder(layers)
            child = level
        self.model = child  # the outermost level: its Sequential's keys are `model.model.<index>`

    def _norm(self, ch: int) -> nn.Module | None:
        return None if self.instance_norm else nn.BatchNorm2d(ch)

    def _normalise(self, x: torch.Tensor, norm: nn.Module | None) -> torch.Tensor:
        return F.instance_norm(x) if norm is None else norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        h = x
        for k, row in enumerate(self.rows):  # down
            if k > 0:
                h = F.leaky_relu(h, 0.2)  # in place in the authors' code: the skip below sees this
                skips.append(h)
            h = row["conv"](h)
            if row["kind"] == "middle":
                h = self._normalise(h, row["conv_norm"])
        for k in reversed(range(self.n_levels)):  # up
            row = self.rows[k]
            h = row["convt"](F.relu(h))
            if k == 0:
                return torch.tanh(h)
            h = self._normalise(h, row["convt_norm"])
            if row["dropout"]:
                h = self.drop(h)
            h = torch.cat([skips[k - 1], h], 1)  # (B, 2C, H, W): the level's input first
        raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# The huggan U-Net


class HugganUnet(nn.Module):
    """The Hub's generator: 8 downs, 7 ups, ``final``; 17 state_dict keys at any width."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, width: int = 64) -> None:
        super().__init__()
        w = width
        self.drop = _DropoutState()
        # (in, out, instance norm, dropout), transcribed from REFERENCE.md with 64 -> w.
        self.down_table = [(in_ch, w, False, False), (w, 2 * w, True, False), (2 * w, 4 * w, True, False),
                           (4 * w, 8 * w, True, True), (8 * w, 8 * w, True, True), (8 * w, 8 * w, True, True),
                           (8 * w, 8 * w, True, True), (8 * w, 8 * w, False, True)]
        self.up_table = [(8 * w, 8 * w, True), (16 * w, 8 * w, True), (16 * w, 8 * w, True), (16 * w, 8 * w, True),
                         (16 * w, 4 * w, False), (8 * w, 2 * w, False), (4 * w, w, False)]
        for i, (cin, cout, _, _) in enumerate(self.down_table, 1):
            block = nn.Module()
            block.model = _holder({0: nn.Conv2d(cin, cout, 4, 2, 1, bias=False)})
            setattr(self, f"down{i}", block)
        for i, (cin, cout, _) in enumerate(self.up_table, 1):
            block = nn.Module()
            block.model = _holder({0: nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)})
            setattr(self, f"up{i}", block)
        # final = [Upsample, ZeroPad2d, Conv, Tanh]: only the conv (index 2) has weights.
        self.final = _holder({2: nn.Conv2d(2 * w, out_ch, 4, padding=1)})

    def _weights(self, name: str, index: int = 0) -> nn.Module:
        return getattr(self, name).model[str(index)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        h = x
        for i, (_, _, norm, dropout) in enumerate(self.down_table, 1):
            h = self._weights(f"down{i}")(h)
            if norm:
                h = F.instance_norm(h)
            h = F.leaky_relu(h, 0.2)
            if dropout:
                h = self.drop(h)
            skips.append(h)
        skips.pop()  # the innermost output is the decoder's input, not a skip
        for i, (_, _, dropout) in enumerate(self.up_table, 1):
            h = F.relu(F.instance_norm(self._weights(f"up{i}")(h)))
            if dropout:
                h = self.drop(h)
            h = torch.cat([h, skips.pop()], 1)  # (B, 2C, H, W): the upsampled path first
        h = F.pad(F.interpolate(h, scale_factor=2, mode="nearest"), (1, 0, 1, 0))
        return torch.tanh(self.final["2"](h))


# --------------------------------------------------------------------------------------------
# Test helpers


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
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    was_enabled = net.drop.enabled
    net.drop.enabled = False
    net.train()
    for x in inputs:
        net(x.clone())
    for m, (momentum, count) in zip(norms, saved):
        m.momentum = momentum
        m.num_batches_tracked.copy_(count + len(inputs))
    net.drop.enabled = was_enabled
    return net


def set_dropout(net: nn.Module, *, enabled: bool, mask_source: MaskSource | None = None) -> None:
    net.drop.enabled = enabled
    net.drop.mask_source = mask_source
