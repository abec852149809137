"""Dropout masks from a counter-based hash: the same masks in PyTorch, ONNX Runtime, CUDA graphs and JS.

A sample's randomness is its dropout masks. They used to come from a ``torch.Generator`` per
sample, which only PyTorch can reproduce; the browser renders the same model with ONNX Runtime
Web and must draw the same masks. So each mask element is a pure function of four integers,

    keep(seed, layer, index) = hash32(seed, layer, index) / 2**32 >= p

where ``seed`` is the sample's own seed (``sample_seed(request_seed, k)``, which folds the sample
number in: 63 bits, also a hash), ``layer`` the dropout layer's number in the generator (see
``nets.number_dropout_layers``) and ``index`` the element's position in the sample's (C, H, W)
tensor in C order; a channel-dropout layer (``GeneratorConfig.channel_dropout``) keeps or drops
whole feature maps, so there ``index`` is the channel and its bit holds over all (H, W). Nothing
depends on a generator's state, the batch or the device.

The hash is ``mix32`` (Chris Wellons' "lowbias32" mixing function: xor-shift / multiply rounds)
applied to the seed's two halves, the layer and the index; every step is a 32-bit operation that
JavaScript's ``Math.imul`` and ``>>> 0`` reproduce exactly (``static/p2p_masks.js`` is the twin of
this file; ``tests/test_masks.py`` pins values of both). Changing anything here changes every
seed's pictures: bump ``MASKS_VERSION`` and say so in the README.

This is the one place masks are drawn. ``nets.SeededDropout`` only applies the masks it is given;
every path gives them the same way, through a :class:`DropoutPlan` (the generator's dropout layers
in forward order and their shapes at any input size): :func:`seeded_forward` for eager PyTorch
(the Renderer's torch backend, training's evaluation), ``p2p_demo.fast`` for ONNX Runtime and CUDA
graphs (the masks are graph inputs), ``static/p2p_masks.js`` in the browser (``plan.to_dict()``).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from .nets import Generator, SeededDropout

MASKS_VERSION = 1
_M = np.uint64(0xFFFFFFFF)


def _mix32(x: np.ndarray) -> np.ndarray:
    """lowbias32 on uint64 arrays holding 32-bit values (products kept to 32 bits)."""
    x = x & _M
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & _M
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & _M
    x ^= x >> np.uint64(16)
    return x


def _mix(x: int) -> int:
    return int(_mix32(np.array([x], np.uint64))[0])


def sample_seed(seed: int, k: int) -> int:
    """The dropout seed (63 bits) of sample k of a request seeded with ``seed`` (only its low 32 bits
    count): two rounds of the hash, so the browser computes it too."""
    if k < 0 or k >= 2**32:
        raise ValueError(f"sample number must be in [0, 2**32), got {k}")
    a = _mix(_mix((int(seed) & 0xFFFFFFFF) ^ 0x243F6A88) ^ k)
    b = _mix(a ^ 0xB7E15162)
    return ((b & 0x7FFFFFFF) << 32) | a


def layer_key(seed: int, layer: int) -> int:
    """The 32-bit key of one sample's masks in one layer."""
    seed = int(seed)
    if seed < 0 or seed >= 2**64 or layer < 0 or layer >= 2**32:
        raise ValueError(f"seed must be in [0, 2**64) and layer in [0, 2**32), got {seed} and {layer}")
    lo, hi = np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)
    k = _mix32(np.array([np.uint64(layer) ^ np.uint64(0x9E3779B9)]))
    k = _mix32(k ^ hi)
    k = _mix32(k ^ lo)
    return int(k[0])


def hash32(seed: int, layer: int, count: int) -> np.ndarray:
    """uint32 hashes of elements 0 .. count - 1 of one sample's mask in one layer."""
    key = np.uint64(layer_key(seed, layer))
    i = np.arange(count, dtype=np.uint64)
    return _mix32(_mix32(i) ^ key).astype(np.uint32)


def keep(seed: int, layer: int, shape: tuple[int, ...], p: float, channel: bool = False) -> np.ndarray:
    """Bool mask of ``shape`` (one sample's (C, H, W)): True where the unit is kept (chance 1 - p);
    with ``channel``, one draw per channel, the same over the whole (H, W)."""
    drawn = shape[:1] + (1,) * (len(shape) - 1) if channel else shape
    u = hash32(seed, layer, int(np.prod(drawn))).astype(np.float64) * 2.0**-32  # exact: 32-bit int x 2**-32
    return np.broadcast_to((u >= p).reshape(drawn), shape)


def scaled(seed: int, layer: int, shape: tuple[int, ...], p: float, channel: bool = False) -> np.ndarray:
    """The float32 multiplier SeededDropout applies: kept units 1 / (1 - p), dropped 0."""
    return keep(seed, layer, shape, p, channel).astype(np.float32) * np.float32(1.0 / (1.0 - p))


def sample_seeds(seed: int, ks: Iterable[int]) -> list[int]:
    """The dropout seeds of samples ``ks`` of a request seeded with ``seed``."""
    return [sample_seed(seed, k) for k in ks]


def layer_masks(seeds: Sequence[int], layer: int, shape: tuple[int, ...], p: float,
                channel: bool = False) -> torch.Tensor:
    """(B, *shape) float32 multipliers of one dropout layer for samples with these seeds."""
    return torch.from_numpy(np.stack([scaled(s, layer, shape, p, channel) for s in seeds]))


@dataclass
class DropoutPlan:
    """The dropout layers of a generator in forward order, and how their shapes follow the input."""

    modules: list[SeededDropout]
    channels: list[int]
    strides: list[tuple[int, int]]  # input (H, W) / this layer's (h, w)
    probs: list[float]
    layers: list[int]  # each module's SeededDropout.layer: its key in the mask hash
    channel: list[bool]  # whole feature maps dropped (one draw per channel)

    @classmethod
    def of(cls, generator: Generator) -> "DropoutPlan":
        """Probe one forward pass at the smallest valid size to find order and shapes."""
        size = generator.config.multiple
        seen: list[tuple[SeededDropout, tuple[int, ...]]] = []
        hooks = [m.register_forward_pre_hook(lambda m, args: seen.append((m, tuple(args[0].shape))))
                 for m in generator.modules() if isinstance(m, SeededDropout)]
        p = next(generator.parameters())
        was_training = generator.training
        generator.eval()  # a probe must not move BatchNorm running statistics
        try:
            with torch.no_grad():
                generator(torch.zeros(1, generator.config.in_channels, size, size, device=p.device, dtype=p.dtype))
        finally:
            generator.train(was_training)
            for h in hooks:
                h.remove()
        return cls(
            modules=[m for m, _ in seen],
            channels=[s[1] for _, s in seen],
            strides=[(size // s[2], size // s[3]) for _, s in seen],
            probs=[m.p for m, _ in seen],
            layers=[m.layer for m, _ in seen],
            channel=[m.channel for m, _ in seen],
        )

    def __len__(self) -> int:
        return len(self.modules)

    def shapes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """One sample's mask shape (C, h, w) per layer for an input of height x width."""
        return [(c, height // sh, width // sw) for c, (sh, sw) in zip(self.channels, self.strides)]

    def draw(self, seeds: Sequence[int], height: int, width: int) -> list[torch.Tensor]:
        """The masks of samples with these seeds (``sample_seed(seed, k)``): (B, C, h, w) per layer,
        float32 on the CPU."""
        return [layer_masks(seeds, layer, shape, p, channel) for shape, p, layer, channel
                in zip(self.shapes(height, width), self.probs, self.layers, self.channel)]

    def mask_names(self) -> list[str]:
        """The masks' input names in an ONNX export, in forward order."""
        return [f"mask{i}" for i in range(len(self))]

    def ones(self, batch: int, height: int, width: int) -> list[torch.Tensor]:
        """Dropout off: the identity."""
        return [torch.ones(batch, *shape) for shape in self.shapes(height, width)]

    def to_dict(self) -> dict:
        """What the browser needs to draw the same masks (``static/p2p_masks.js``)."""
        return {"inputs": self.mask_names(), "channels": self.channels,
                "strides": [list(s) for s in self.strides], "probs": self.probs, "layers": self.layers,
                "channel": self.channel, "masks_version": MASKS_VERSION}

    def set(self, masks: Sequence[torch.Tensor] | None) -> None:
        """Give each layer its masks (None: take them back)."""
        for i, m in enumerate(self.modules):
            m.masks = None if masks is None else masks[i]


_plans: "weakref.WeakKeyDictionary[Generator, DropoutPlan]" = weakref.WeakKeyDictionary()


def plan_of(generator: Generator) -> DropoutPlan:
    """``DropoutPlan.of(generator)``, probed once per generator."""
    plan = _plans.get(generator)
    if plan is None:
        plan = _plans[generator] = DropoutPlan.of(generator)
    return plan


def seeded_forward(generator: Generator, x: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
    """The generator on x (B, C, H, W) in the reference's test mode (per-image statistics): item b
    with the masks of seed ``seeds[b]``, or dropout off for ``seeds=None``. Leaves the generator
    in inference mode; its train / eval flag is left as it is."""
    generator.set_inference_mode(per_image_stats=True, dropout=seeds is not None)
    if seeds is None or not generator.has_dropout:
        return generator(x)
    if len(seeds) != x.shape[0]:
        raise ValueError(f"{len(seeds)} dropout seeds for a batch of {x.shape[0]}")
    plan = plan_of(generator)
    plan.set([m.to(x.device, x.dtype) for m in plan.draw(seeds, *x.shape[-2:])])
    try:
        return generator(x)
    finally:
        plan.set(None)
