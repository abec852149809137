"""Renderer: input (sketch, photo or ready image) -> edge map -> generator -> images.

Sampling follows the reference's test mode on purpose: every image is normalised with its own
statistics and dropout stays on, which is what the authors' published results use (eval-mode
BatchNorm gives the blurry/black outputs users report). Each sample k of a request gets its own
dropout generator seeded from (seed, k), so a sample does not depend on the batch it was drawn in.
``deterministic=True`` turns dropout off: one canonical rendering, identical for every seed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from . import edges as edges_mod
from .image import crop, load_image, pad_to_multiple, resize, to_images, to_tensor
from .nets import Generator

log = logging.getLogger(__name__)

EDGE_METHODS = ("auto", "hed", "canny", "sketch", "none")


@dataclass
class RenderResult:
    edges: np.ndarray  # what the generator saw: (H, W) edge map or (H, W, 3) image, uint8
    images: list[np.ndarray]  # n uint8 (H, W, 3) renderings; images[0] is the main output
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


def sample_seed(seed: int, k: int) -> int:
    """The dropout seed of sample k of a request seeded with ``seed`` (stable across versions)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, k]).generate_state(1, np.uint64)[0] >> 1)


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def looks_like_drawing(rgb: np.ndarray) -> bool:
    """A line drawing is mostly one flat paper colour with little colour: tell it from a photo."""
    small = resize(rgb, (min(128, rgb.shape[1]), min(128, rgb.shape[0])))
    gray = small.mean(axis=2)
    sat = small.max(axis=2).astype(np.int16) - small.min(axis=2)
    paper = max((gray > 200).mean(), (gray < 55).mean())  # black-on-white or inverted
    return bool(paper > 0.75 and (sat > 40).mean() < 0.05)


class Renderer:
    """Runs one generator on CPU (fp32) or CUDA (fp16) for sketches, photos and ready inputs."""

    def __init__(self, generator: Generator, info: Any, *, device: str | torch.device | None = None) -> None:
        self.info = info
        self.device = pick_device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.generator = generator.to(self.device, self.dtype).eval()
        for p in self.generator.parameters():
            p.requires_grad_(False)
        self.in_channels = generator.config.in_channels
        self.line_style = edges_mod.LineStyle.from_dict(info.line_style) if info.line_style else edges_mod.LineStyle()
        self.input_kind = getattr(info, "input", "edges")

    @classmethod
    def load(cls, spec: str, *, device: str | torch.device | None = None, **hub_kwargs: Any) -> "Renderer":
        from .hub import load_generator

        generator, info = load_generator(spec, **hub_kwargs)
        return cls(generator, info, device=device)

    # ---------------------------------------------------------------------------------------
    def make_edges(self, source: Any, method: str = "auto", size: int | None = None) -> np.ndarray:
        """What the generator will see, for a sketch / photo / image input.

        method: ``sketch`` (normalise a drawing), ``hed`` / ``canny`` (photo -> edges),
        ``auto`` (sketch if the input looks like a drawing, else HED), ``none`` (the image as it
        is, resized to ``size``). Models that take images rather than edges always use ``none``.
        """
        if method not in EDGE_METHODS:
            raise ValueError(f"edges method must be one of {EDGE_METHODS}, got {method!r}")
        style = self.line_style if size is None else replace(self.line_style, size=size)
        if method == "none" or self.input_kind != "edges":
            rgb = load_image(source)
            return resize(rgb, style.size)
        if method == "auto":
            if isinstance(source, dict):  # a Gradio Sketchpad value
                method = "sketch"
            else:
                source = load_image(source)
                method = "sketch" if looks_like_drawing(source) else "hed"
        if method == "sketch":
            return edges_mod.normalize_sketch(source, style).image
        return edges_mod.photo_to_edges(load_image(source), method=method, style=style).image

    @torch.inference_mode()
    def generate(self, model_input: np.ndarray, *, n: int = 1, seed: int = 0,
                 deterministic: bool = False, batch_size: int | None = None) -> list[np.ndarray]:
        """Run the generator on one prepared input; n seeded samples (dropout on) or one canonical."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        g = self.generator
        sampled = not deterministic and g.has_dropout
        n_out = n if sampled else 1
        x = to_tensor(model_input, self.in_channels).to(self.device, self.dtype)
        x, hw = pad_to_multiple(x, g.config.multiple)
        g.set_inference_mode(per_image_stats=True, dropout=sampled)
        batch_size = batch_size or n_out
        outputs: list[np.ndarray] = []
        try:
            for start in range(0, n_out, batch_size):
                ks = range(start, min(start + batch_size, n_out))
                if sampled:
                    g.set_dropout_generators([torch.Generator().manual_seed(sample_seed(seed, k)) for k in ks])
                y = g(x.expand(len(ks), -1, -1, -1))  # (b, C, H, W) in [-1, 1]
                outputs += to_images(crop(y, hw))
        finally:
            g.set_dropout_generators(None)
        # Without dropout every sample is the same image: repeat it so callers always get n.
        return outputs if sampled else outputs * n

    def __call__(self, source: Any, *, edges: str = "auto", n: int = 1, seed: int = 0,
                 deterministic: bool = False, size: int | None = None) -> RenderResult:
        t0 = time.perf_counter()
        model_input = self.make_edges(source, edges, size)
        t1 = time.perf_counter()
        images = self.generate(model_input, n=n, seed=seed, deterministic=deterministic)
        t2 = time.perf_counter()
        return RenderResult(model_input, images, {"edges": t1 - t0, "model": t2 - t1, "total": t2 - t0})
