"""GAN losses on PatchGAN logits, and what the discriminator is shown for each loss option.

Loss options (the paper's table): ``l1`` (no discriminator), ``gan`` (D sees the output alone),
``cgan`` (D sees cat(input, output)), ``l1+gan``, ``l1+cgan`` (the reference).
GAN flavours: ``vanilla`` (BCE with logits; G uses the non-saturating loss, i.e. BCE against
"real"), ``lsgan`` (least squares against 1 / 0), ``hinge`` (D: relu(1 - real) + relu(1 + fake),
G: -mean(fake)). ``r1_penalty``: Mescheder et al.'s R1, the squared gradient of D at real inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from train.config import GAN_MODES


def d_loss(logits: torch.Tensor, real: bool, mode: str) -> torch.Tensor:
    """The discriminator's loss on logits of real (True) or generated (False) inputs."""
    logits = logits.float()  # losses in fp32 under autocast
    if mode == "vanilla":
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        return F.binary_cross_entropy_with_logits(logits, target)
    if mode == "lsgan":
        return F.mse_loss(logits, torch.full_like(logits, 1.0 if real else 0.0))
    if mode == "hinge":
        return F.relu(1.0 - logits).mean() if real else F.relu(1.0 + logits).mean()
    raise ValueError(f"gan_mode must be one of {GAN_MODES}, got {mode!r}")


def g_loss(logits: torch.Tensor, mode: str) -> torch.Tensor:
    """The generator's adversarial loss on D's logits for its outputs (non-saturating)."""
    logits = logits.float()
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    if mode == "lsgan":
        return F.mse_loss(logits, torch.ones_like(logits))
    if mode == "hinge":
        return -logits.mean()
    raise ValueError(f"gan_mode must be one of {GAN_MODES}, got {mode!r}")


def d_input(a: torch.Tensor, y: torch.Tensor, conditional: bool) -> torch.Tensor:
    """What D judges: the pair for cgan, the image alone for gan."""
    if conditional:
        return torch.cat([a, y], 1)  # (B, Cin + C, H, W) in [-1, 1]
    return y


def d_in_channels(in_channels: int, out_channels: int, conditional: bool) -> int:
    return in_channels + out_channels if conditional else out_channels


# A target pixel whose every channel is at least this (in [-1, 1]; 249 of 255) is paper, not object.
PAPER_LEVEL = 0.95
# A target pixel whose FLAT_WINDOW x FLAT_WINDOW neighbourhood varies less than FLAT_THRESHOLD (0-255,
# the local standard deviation with channels averaged) is "flat": flat paper and flat fills.
FLAT_WINDOW = 5
FLAT_THRESHOLD = 1.0


def object_mask(target: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) float: 1 where the target draws something, 0 on the paper (white in every channel)."""
    return (target.amin(1, keepdim=True) < PAPER_LEVEL).float()


def mode_seeking_loss(fake1: torch.Tensor, fake2: torch.Tensor, dropout_p: float, pool: int = 1,
                      where: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Mao et al.'s mode-seeking term (CVPR 2019) with dropout masks as the latent code.

    The paper maximises d(G(x, z1), G(x, z2)) / d(z1, z2) by minimising its inverse. Here z is the
    set of dropout masks: two independent masks of rate p, each scaled by 1 / (1 - p), differ by
    2p on average per unit, so d(z1, z2) = 2p and the loss is 2p / (mean |fake1 - fake2| + eps)
    (outputs in [-1, 1]). Small when the two samples differ, large when dropout changes nothing.

    pool > 1 measures the distance between the samples averaged over pool x pool cells: a difference
    that alternates in sign within a cell (a checkerboard, a fine texture) then counts for nothing,
    while two colours of one area count in full.

    where (B, 1, H, W, 0..1; ``object_mask`` of the target) restricts the distance to the object:
    the difference is averaged over the object's pixels of each cell, and cells weigh by their share
    of object, so two samples that differ only on the paper (specks, colour clouds) earn nothing.
    No object in the batch: no term (0).
    """
    diff = fake1 - fake2
    if where is None:
        if pool > 1:
            diff = F.avg_pool2d(diff, pool, ceil_mode=True)
        d_img = diff.abs().mean()
    else:
        where = where.to(diff.dtype)
        diff = diff * where
        if pool > 1:
            diff, where = (F.avg_pool2d(t, pool, ceil_mode=True) for t in (diff, where))
        area = where.sum() * diff.shape[1]
        if float(area) == 0:
            return diff.new_zeros(())
        # |mean of the cell's object pixels| weighted by the cell's object share = |sum| / cell size
        d_img = diff.abs().sum() / area
    return (2.0 * dropout_p) / (d_img + eps)


def local_std(x: torch.Tensor, window: int = FLAT_WINDOW, eps: float = 0.0) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W): the window x window standard deviation, channels averaged, in x's
    units (edges mirrored). To differentiate it, give eps > 0: it keeps the gradient finite where a
    patch is constant."""
    pad = window // 2
    xp = F.pad(x.float(), (pad, pad, pad, pad), mode="reflect")
    mean = F.avg_pool2d(xp, window, stride=1)
    var = (F.avg_pool2d(xp * xp, window, stride=1) - mean * mean).clamp_min(0)
    return (var + eps * eps).sqrt().mean(1, keepdim=True)


def flat_mask(target: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) bool: the target's flat pixels, whose local std is below ``FLAT_THRESHOLD``
    levels of 255 (target in [-1, 1])."""
    with torch.no_grad():
        return local_std(target) * 127.5 < FLAT_THRESHOLD


def flat_fill_loss(fake: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """How mottled the output is where the target is flat: the mean local std of ``fake`` over the
    ``flat_mask`` of its target, in [-1, 1] units; 0 when the target has no flat pixel.

    Unlike L1, it does not care which colour a fill is, only that the fill is one colour: a dropout
    sample that paints a whole fill another colour (variety) pays nothing, one that paints it in
    blotches or leaves specks on the paper pays. The held-out ``flat_std`` score measures the same
    thing on uint8 pictures (``train.evaluate``).
    """
    n = flat.sum()
    if int(n) == 0:
        return fake.new_zeros((), dtype=torch.float32)
    return (local_std(fake, eps=1e-3) * flat).sum() / n


def r1_penalty(D: torch.nn.Module, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al., ICML 2018): mean over the batch of |grad_x D(x)|^2 at real inputs x,
    summed over D's patch logits. Differentiable (create_graph), so it trains D; fp32, since a second
    derivative under bf16 autocast loses most of its digits."""
    x = real.detach().float().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x).float().sum(), x, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()
