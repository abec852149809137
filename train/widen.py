"""Widening a trained U-Net: the same function with more channels (Chen et al., "Net2Net", ICLR 2016).

``python -m train fit --init-from weights/openmoji --ngf 24`` continues a model trained at ngf 16
with a wider generator instead of starting one from scratch: every channel of the old net is kept,
each new channel is a copy of a randomly chosen old one, and the layer that reads a channel which
now exists k times reads each copy with 1/k of the old weight. InstanceNorm, ReLU and LeakyReLU
act per channel, so the copies stay equal and the wider net computes what the narrow one did
(exactly with dropout off; dropout draws the copies' masks independently). A little noise on the
copies' incoming weights lets training tell them apart.

Only the reference layout with per-image (instance) normalisation is widened: BatchNorm's running
statistics and the huggan layout are not handled, and a config that differs in anything but ``ngf``
is refused.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from p2p_demo.errors import P2PError
from p2p_demo.nets import GeneratorConfig, build_generator

NOISE = 0.005  # the copies' incoming weights get N(0, (NOISE * the layer's weight std)^2)


class CannotWiden(P2PError, ValueError):
    """The source generator cannot be widened into this configuration."""


def check_widenable(old: GeneratorConfig, new: GeneratorConfig) -> None:
    if old.layout != "reference" or old.norm != "instance":
        raise CannotWiden("only reference-layout generators with instance norm can be widened "
                          f"(this one: layout {old.layout}, norm {old.norm})")
    if new.ngf <= old.ngf:
        raise CannotWiden(f"widening needs a larger ngf than the model's {old.ngf}, got {new.ngf}")
    if replace(new, ngf=old.ngf) != old:
        raise CannotWiden("only ngf may change when widening; the rest must match the model "
                          f"(model: {old.to_dict()}, asked: {new.to_dict()})")


def _mapping(old: int, new: int, generator: torch.Generator) -> torch.Tensor:
    """new channel -> the old channel it copies: the old ones first, then random picks."""
    extra = torch.randint(0, old, (new - old,), generator=generator)
    return torch.cat([torch.arange(old), extra])


def _levels(G: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(down conv, up conv) per U-Net level, outermost first."""
    out, block = [], G.model
    while block is not None:
        layers = list(block.model)
        convs = [m for m in layers if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
                 or (isinstance(m, nn.Sequential) and any(isinstance(x, nn.Conv2d) for x in m))]
        out.append((convs[0], convs[1]))
        subs = [m for m in layers if isinstance(m, type(block))]  # the next level down
        block = subs[0] if subs else None
    return out


def _conv(m: nn.Module) -> nn.Module:
    """The convolution of a decoder step (a resize step is Upsample + Conv2d)."""
    return m[-1] if isinstance(m, nn.Sequential) else m


def widen(G: nn.Module, config: GeneratorConfig, *, seed: int = 0, noise: bool = True) -> nn.Module:
    """A new generator built from ``config`` (G's config with a larger ngf) computing what G does.

    The channel mapping depends only on ``seed`` and the two configs, so a model's raw weights and
    the EMA of its weights widened with the same seed stay in step."""
    check_widenable(G.config, config)
    wide = build_generator(config)
    g = torch.Generator().manual_seed(seed)
    old_levels, new_levels = _levels(G), _levels(wide)
    n = len(old_levels)
    down_maps = [_mapping(_conv(o[0]).out_channels, _conv(w[0]).out_channels, g) for o, w in zip(old_levels, new_levels)]
    up_maps = [None] + [_mapping(_conv(o[1]).out_channels, _conv(w[1]).out_channels, g)
                        for o, w in zip(old_levels[1:], new_levels[1:])]
    noise_gen = torch.Generator().manual_seed(seed + 1)

    def counts(m: torch.Tensor) -> torch.Tensor:
        return torch.bincount(m).to(torch.float32)[m]

    def identity(c: int) -> torch.Tensor:
        return torch.arange(c)

    with torch.no_grad():
        for b in range(n):
            (od, ou), (wd, wu) = old_levels[b], new_levels[b]
            od, ou, wd, wu = _conv(od), _conv(ou), _conv(wd), _conv(wu)
            # down: reads the image (outermost) or the level above's down output
            m_in = identity(od.in_channels) if b == 0 else down_maps[b - 1]
            m_out = down_maps[b]
            _copy(od, wd, m_in, counts(m_in), m_out, noise, noise_gen, transposed=False)
            # up: reads this level's down output (innermost) or cat([it, the level below's up output])
            if b == n - 1:
                m_in = down_maps[b]
                c_in = counts(m_in)
            else:
                m_in = torch.cat([down_maps[b], up_maps[b + 1] + _conv(od).out_channels])
                c_in = torch.cat([counts(down_maps[b]), counts(up_maps[b + 1])])
            m_out = identity(ou.out_channels) if b == 0 else up_maps[b]
            _copy(ou, wu, m_in, c_in, m_out, noise, noise_gen, transposed=isinstance(ou, nn.ConvTranspose2d))
    return wide


def _copy(old: nn.Module, new: nn.Module, m_in: torch.Tensor, c_in: torch.Tensor, m_out: torch.Tensor,
          noise: bool, gen: torch.Generator, *, transposed: bool) -> None:
    w = old.weight.detach().float()
    if transposed:  # (in, out, kh, kw)
        nw = w[m_in][:, m_out] / c_in[:, None, None, None]
        copies = (slice(None), slice(old.out_channels, None))
    else:  # (out, in, kh, kw)
        nw = w[m_out][:, m_in] / c_in[None, :, None, None]
        copies = (slice(old.out_channels, None),)
    if noise and new.out_channels > old.out_channels:
        part = nw[copies]
        part += torch.randn(part.shape, generator=gen) * (NOISE * float(w.std()))
    new.weight.copy_(nw.to(new.weight.dtype))
    if old.bias is not None:
        new.bias.copy_(old.bias.detach()[m_out].to(new.bias.dtype))


def widen_state(state: dict[str, torch.Tensor], old: GeneratorConfig, new: GeneratorConfig, *, seed: int = 0,
                noise: bool = True) -> dict[str, torch.Tensor]:
    """``widen`` on a state dict: the weights of ``old`` -> weights for ``new``."""
    G = build_generator(old)
    G.load_state_dict(state)
    return widen(G, new, seed=seed, noise=noise).state_dict()
