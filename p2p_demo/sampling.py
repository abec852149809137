"""Sampling: whether a request gets different samples, each sample's seed, and its dropout masks.

A sample's randomness is its dropout masks and nothing else (normalisation uses each image's own
statistics, the reference's test mode). Sample k of a request seeded with ``seed`` has the seed
``sample_seed(seed, k)``; its mask in dropout layer ``layer`` is a hash of that seed
(``p2p_demo.masks``, twinned in ``static/p2p_masks.js`` for the browser). So a sample does not
depend on the batch it was drawn in, the backend, or whether a browser drew it.

* :func:`sample_seed` / :func:`sample_seeds`: the per-sample seeds (stable across versions:
  ``tests/test_masks.py`` pins values).
* :func:`layer_masks`: one layer's masks for a batch of samples, the only place masks are drawn
  (``nets.SeededDropout`` in eager PyTorch and ``fast.DropoutPlan`` for ONNX / CUDA graphs).
* :func:`is_sampled`: the rule "sample or not".
* :func:`seeded_forward`: the generator in test mode for a batch of seeded samples, used by the
  Renderer's torch backend and by training's evaluation (``train.evaluate.render_test_mode``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import torch

from . import masks
from .masks import sample_seed

if TYPE_CHECKING:  # nets imports this module; the names below are only for type hints
    from .nets import Generator
    from .registry import ModelInfo

__all__ = ["sample_seed", "sample_seeds", "layer_masks", "is_sampled", "seeded_forward"]


def sample_seeds(seed: int, ks: Iterable[int]) -> list[int]:
    """The dropout seeds of samples ``ks`` of a request seeded with ``seed``."""
    return [sample_seed(seed, k) for k in ks]


def layer_masks(seeds: Sequence[int], layer: int, shape: tuple[int, ...], p: float) -> torch.Tensor:
    """(B, *shape) float32 multipliers of one dropout layer for samples with these seeds: kept
    units 1 / (1 - p), dropped 0 (``masks.scaled``)."""
    return torch.from_numpy(np.stack([masks.scaled(s, layer, shape, p) for s in seeds]))


def is_sampled(generator: "Generator", info: "ModelInfo", deterministic: bool = False) -> bool:
    """Whether samples differ: dropout on, unless asked off (``deterministic``), or the model is
    not made for it (``info.dropout_sampling`` false: models published for dropout-off rendering,
    the huggan ones, give noise with dropout on), or it has no dropout at all."""
    return not deterministic and info.dropout_sampling and generator.has_dropout


def seeded_forward(generator: "Generator", x: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
    """The generator on x (B, C, H, W) with per-image statistics: item b with dropout seed
    ``seeds[b]``, or dropout off for ``seeds=None``. Leaves the generator in inference mode."""
    generator.set_inference_mode(per_image_stats=True, dropout=seeds is not None)
    if seeds is None or not generator.has_dropout:
        return generator(x)
    generator.set_dropout_generators([torch.Generator().manual_seed(s) for s in seeds])
    try:
        return generator(x)
    finally:
        generator.set_dropout_generators(None)
