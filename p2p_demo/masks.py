"""Dropout masks from a counter-based hash: the same masks in PyTorch, ONNX Runtime, CUDA graphs and JS.

A sample's randomness is its dropout masks. They used to come from a ``torch.Generator`` per
sample, which only PyTorch can reproduce; the browser renders the same model with ONNX Runtime
Web and must draw the same masks. So each mask element is a pure function of four integers,

    keep(seed, layer, index) = hash32(seed, layer, index) / 2**32 >= p

where ``seed`` is the sample's own seed (``sample_seed(request_seed, k)``, which folds the sample
number in: 63 bits, also a hash), ``layer`` the dropout layer's number in the generator (see
``nets.number_dropout_layers``) and ``index`` the element's position in the sample's (C, H, W)
tensor in C order. Nothing depends on a generator's state, the batch or the device.

The hash is ``mix32`` (Chris Wellons' "lowbias32" mixing function: xor-shift / multiply rounds)
applied to the seed's two halves, the layer and the index; every step is a 32-bit operation that
JavaScript's ``Math.imul`` and ``>>> 0`` reproduce exactly (``static/p2p_masks.js`` is the twin of
this file; ``tests/test_masks.py`` pins values of both). Changing anything here changes every
seed's pictures: bump ``MASKS_VERSION`` and say so in the README.
"""

from __future__ import annotations

import numpy as np

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


def keep(seed: int, layer: int, shape: tuple[int, ...], p: float) -> np.ndarray:
    """Bool mask of ``shape`` (one sample's (C, H, W)): True where the unit is kept (chance 1 - p)."""
    count = int(np.prod(shape))
    u = hash32(seed, layer, count).astype(np.float64) * 2.0**-32  # exact: a 32-bit integer times 2**-32
    return (u >= p).reshape(shape)


def scaled(seed: int, layer: int, shape: tuple[int, ...], p: float) -> np.ndarray:
    """The float32 multiplier SeededDropout applies: kept units 1 / (1 - p), dropped 0."""
    return keep(seed, layer, shape, p).astype(np.float32) * np.float32(1.0 / (1.0 - p))
