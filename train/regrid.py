"""A trained U-Net's transposed-convolution decoder turned into a resize-convolution one.

``python -m train fit --init-from weights/fluent3d --upsample resize`` continues a model whose
decoder steps are the reference's 4x4 stride-2 transposed convolutions as one whose steps are
nearest x2 upsampling followed by a 3x3 convolution (Odena et al., "Deconvolution and Checkerboard
Artifacts", 2016), keeping everything else (encoder, norms, the decoder's biases) as it was.

Why the conversion is a projection. In one dimension a 4-tap stride-2 transposed convolution
writes output pixel 2i with taps (w1 on x[i], w3 on x[i-1]) and pixel 2i+1 with (w2 on x[i], w0 on
x[i+1]): four free weights, two per output phase. Nearest x2 then a 3-tap convolution v gives
2i <- (v0 on x[i-1], v1+v2 on x[i]) and 2i+1 <- (v0+v1 on x[i], v2 on x[i+1]): the same four
places, but only three free weights, so ``w = A v`` (A is ``p2p_demo.nets.RESIZE_TAPS``; a resize
step runs as that transposed convolution, ``nets.resize_as_transpose``). The part of w outside A's
range is exactly what lets the two phases differ, the checkerboard. In two dimensions the map is
``A (x) A``, applied per (input, output) channel pair: the least-squares v is ``pinv(A) W pinv(A)^T``.
A transposed convolution whose weights lie in that range is reproduced exactly (the tests check
it); a trained one loses its phase-specific part and has to relearn what that part did.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from p2p_demo.errors import P2PError
from p2p_demo.nets import RESIZE_TAPS, GeneratorConfig, ResizeUp, build_generator


class CannotRegrid(P2PError, ValueError):
    """The source generator's decoder cannot be converted into this configuration."""


def check_regriddable(old: GeneratorConfig, new: GeneratorConfig) -> None:
    if old.layout != "reference":
        raise CannotRegrid(f"only reference-layout generators can change their decoder (this one: {old.layout})")
    if (old.upsample, new.upsample) != ("transpose", "resize"):
        raise CannotRegrid(f"a decoder converts from transposed to resize convolutions only "
                           f"(model: {old.upsample}, asked: {new.upsample})")
    if replace(new, upsample=old.upsample) != old:
        raise CannotRegrid("only --upsample may change with the decoder; the rest must match the model "
                           f"(model: {old.to_dict()}, asked: {new.to_dict()})")


def resize_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(in, out, 4, 4) transposed-convolution weight -> the nearest (out, in, 3, 3) resize-convolution one."""
    if tuple(weight.shape[-2:]) != (4, 4):
        raise CannotRegrid(f"expected a 4x4 transposed-convolution kernel, got {tuple(weight.shape)}")
    p = torch.linalg.pinv(torch.tensor(RESIZE_TAPS, dtype=torch.float64))  # (3, 4)
    v = torch.einsum("ak,bl,iokl->oiab", p, p, weight.detach().double())
    return v.to(weight.dtype)


def _up_steps(G: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of each decoder x2 step, in module order: a ConvTranspose2d or a ResizeUp."""
    return [(name, m) for name, m in G.named_modules() if isinstance(m, (nn.ConvTranspose2d, ResizeUp))]


def regrid(G: nn.Module, config: GeneratorConfig) -> nn.Module:
    """A new generator built from ``config`` (G's with ``upsample="resize"``): G's weights, its decoder projected."""
    check_regriddable(G.config, config)
    new = build_generator(config)
    old_steps, new_steps = _up_steps(G), _up_steps(new)
    assert len(old_steps) == len(new_steps), "the two decoders have different depths"
    state = dict(G.state_dict())
    for (old_name, up), (new_name, _) in zip(old_steps, new_steps):
        del state[f"{old_name}.weight"]
        state[f"{new_name}.1.weight"] = resize_kernel(up.weight)
        if up.bias is not None:
            del state[f"{old_name}.bias"]
            state[f"{new_name}.1.bias"] = up.bias.detach().clone()
    new.load_state_dict(state)  # strict: a shape or key that does not fit raises here
    return new


def regrid_state(state: dict[str, torch.Tensor], old: GeneratorConfig, new: GeneratorConfig) -> dict[str, torch.Tensor]:
    """``regrid`` on a state dict: the weights of ``old`` -> weights for ``new``."""
    G = build_generator(old)
    G.load_state_dict(state)
    return regrid(G, new).state_dict()
