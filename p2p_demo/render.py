"""Renderer: one request (drawing, strokes or photo; n; seed) -> edge map -> generator -> pictures.

``Renderer.render(RenderRequest(...))`` is the one call: it makes what the model sees, decides once
whether the model is sampled, and returns the pictures with their timings (``render_steps`` gives
sample 1 first, then all n: the same pictures). ``Renderer(source, n=..., seed=...)`` is the same
call with the request's fields as keywords.

Sampling follows the reference's test mode on purpose: every image is normalised with its own
statistics and dropout stays on, which is what the authors' published results use (eval-mode
BatchNorm gives the blurry/black outputs users report). Seeds and masks live in ``p2p_demo.masks``:
sample k of a request has its own dropout seed, so a sample does not depend on the batch it was
drawn in, the backend, or whether a browser drew it. Whether a model is sampled at all is decided
here (``is_sampled``).
``deterministic=True`` turns dropout off: one canonical rendering, identical for every seed.

Backends (``backend=``): ``torch`` runs the generator eagerly (fp32 on the CPU, fp16 on CUDA);
``onnx`` runs an ONNX Runtime export on the CPU; ``cuda-graph`` replays fp16 CUDA graphs captured
per input shape. ``auto`` picks ``onnx`` on the CPU when onnxruntime is installed, ``cuda-graph``
on CUDA, and falls back to ``torch`` with a logged warning when the fast path cannot be built.
Every backend draws the same dropout masks for the same seed (see ``p2p_demo.fast``), so the
choice changes speed, never which picture a seed gives (up to float rounding, and fp16 on GPU).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterator, Union

import numpy as np
import torch

from . import edges as edges_mod
from .image import ImageSource, crop, load_image, pad_to_multiple, resize, to_images, to_tensor
from .nets import Generator, pick_device
from .masks import DropoutPlan, sample_seeds, seeded_forward
from .registry import ModelInfo

if TYPE_CHECKING:
    from .fast import CudaGraphRunner, OnnxRunner

log = logging.getLogger(__name__)

EDGE_METHODS = ("auto", "hed", "canny", "sketch", "none")
BACKENDS = ("auto", "torch", "onnx", "cuda-graph")

# What a picture can be made from: a raster (bytes, path, PIL image, array) or the canvas's vectors.
Source = Union[ImageSource, edges_mod.Strokes]


@dataclass(frozen=True)
class RenderRequest:
    """One render: what to draw from and how many pictures of which seed.

    ``source`` is a drawing or a photo (see ``Source``); ``strokes``, when the drawing also has its
    vectors (the canvas's), is what a model that takes edge maps redraws from (framed and redrawn as
    the browser does); a model that takes images uses ``source``. ``edges`` is one of
    ``EDGE_METHODS`` (see ``Renderer.make_edges``); ``size`` overrides the model's side.
    """

    source: Source
    n: int = 1
    seed: int = 0
    deterministic: bool = False
    edges: str = "auto"
    strokes: edges_mod.Strokes | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if self.edges not in EDGE_METHODS:
            raise ValueError(f"edges method must be one of {EDGE_METHODS}, got {self.edges!r}")


@dataclass
class RenderResult:
    edges: np.ndarray  # what the generator saw: (H, W) edge map or (H, W, 3) image, uint8
    images: list[np.ndarray]  # n uint8 (H, W, 3) renderings; images[0] is the main output
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    notes: list[str] = field(default_factory=list)  # what happened on the way, e.g. a CPU fallback
    sampled: bool = True  # whether the pictures differ (else images holds one picture n times)
    complete: bool = True  # False: sample 1 only, the rest follow (Renderer.render_steps)


def is_sampled(generator: Generator, info: ModelInfo, deterministic: bool = False) -> bool:
    """Whether samples differ: dropout on, unless asked off (``deterministic``), or the model is
    not made for it (``info.dropout_sampling`` false: models published for dropout-off rendering,
    the huggan ones, give noise with dropout on), or it has no dropout at all."""
    return not deterministic and info.dropout_sampling and generator.has_dropout


def looks_like_drawing(rgb: np.ndarray) -> bool:
    """A line drawing is mostly one flat paper colour with little colour: tell it from a photo."""
    small = resize(rgb, (min(128, rgb.shape[1]), min(128, rgb.shape[0])))
    gray = small.mean(axis=2)
    sat = small.max(axis=2).astype(np.int16) - small.min(axis=2)
    paper = max((gray > 200).mean(), (gray < 55).mean())  # black-on-white or inverted
    return bool(paper > 0.75 and (sat > 40).mean() < 0.05)


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with n torch intra-op threads (None: leave them).

    With ONNX Runtime doing the heavy work, torch only converts pixels around it; at 2 threads its
    OpenMP workers keep spin-waiting after each of those tiny ops and take the cores ORT's threads
    need: measured on 2 cores, a 256² request used twice the CPU time and wall time.
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Renderer:
    """Runs one generator on CPU (fp32) or CUDA (fp16) for sketches, photos and ready inputs.

    The fast backends snapshot the weights when the Renderer is built; build a new Renderer after
    changing the generator's weights.
    """

    def __init__(self, generator: Generator, info: ModelInfo, *, device: str | torch.device | None = None,
                 backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.info = info
        self.device = pick_device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.generator = generator.to(self.device, self.dtype).eval()
        for p in self.generator.parameters():
            p.requires_grad_(False)
        self.in_channels = generator.config.in_channels
        self.line_style = edges_mod.LineStyle.from_dict(info.line_style) if info.line_style else edges_mod.LineStyle()
        self.input_kind = info.input
        self.notes: list[str] = []  # of the last generate() call
        self._fast: OnnxRunner | CudaGraphRunner | None = None
        self._plan: DropoutPlan | None = None  # the fast backends' masks
        self._cpu_fallback: Renderer | None = None
        self.backend = "torch"
        self._setup_backend(backend)

    def _setup_backend(self, backend: str) -> None:
        from . import fast

        cuda = self.device.type == "cuda"
        requested = backend
        if backend == "auto":
            backend = "cuda-graph" if cuda else ("onnx" if fast.onnxruntime_available() else "torch")
            if backend == "torch":
                log.info("onnxruntime is not installed: rendering with eager PyTorch on the CPU")
        if backend == "torch":
            if cuda:
                torch.backends.cudnn.benchmark = True
            return
        if backend == "onnx" and cuda:
            raise ValueError("backend 'onnx' runs on the CPU; use 'cuda-graph' or 'torch' on CUDA")
        if backend == "cuda-graph" and not cuda:
            raise ValueError("backend 'cuda-graph' needs a CUDA device")
        try:
            self.backend = backend
            if backend == "onnx":
                self._fast = fast.OnnxRunner.from_generator(self.generator)
                self._plan = self._fast.plan
            else:
                torch.backends.cudnn.benchmark = True  # per-shape algorithm choice, kept in the graphs
                self._plan = DropoutPlan.of(self.generator)
                self._fast = fast.CudaGraphRunner(self.generator, self._plan)
            self._warm_up()
        except Exception as e:  # an exporter or runtime that cannot handle this model: stay correct
            if requested != "auto":
                raise
            log.warning("the %s backend is unavailable for this model (%s: %s); using eager PyTorch",
                        backend, type(e).__name__, e)
            self._fast = self._plan = None
            self.backend = "torch"

    def _warm_up(self) -> None:
        side = max(self.line_style.size, 1)
        m = self.generator.config.multiple
        side = -(-side // m) * m
        x = torch.full((1, self.in_channels, side, side), 1.0)
        with torch.inference_mode():
            self._forward(x, [0], seed=0, sampled=self.generator.has_dropout)

    @classmethod
    def load(cls, spec: str, *, device: str | torch.device | None = None, backend: str = "auto",
             **hub_kwargs: Any) -> "Renderer":
        from .hub import load_generator

        generator, info = load_generator(spec, **hub_kwargs)
        return cls(generator, info, device=device, backend=backend)

    # ---------------------------------------------------------------------------------------
    def make_edges(self, source: Source, method: str = "auto", size: int | None = None) -> np.ndarray:
        """What the generator will see, for a sketch / photo / image input.

        method: ``sketch`` (normalise a drawing), ``hed`` / ``canny`` (photo -> edges),
        ``auto`` (sketch if the input looks like a drawing, else HED), ``none`` (the image as it
        is, resized to ``size``). Models that take images rather than edges always use ``none``.
        """
        if method not in EDGE_METHODS:
            raise ValueError(f"edges method must be one of {EDGE_METHODS}, got {method!r}")
        style = self.line_style if size is None else replace(self.line_style, size=size)
        if isinstance(source, edges_mod.Strokes):  # the canvas' vectors: framed and redrawn from them
            if method not in ("auto", "sketch") or self.input_kind != "edges":
                raise ValueError(f"strokes become an edge map; they cannot be used with edges={method!r} "
                                 f"or a model that takes {self.input_kind}")
            return edges_mod.normalize_strokes(source, style).image
        if method == "none" or self.input_kind != "edges":
            rgb = load_image(source)
            return resize(rgb, style.size)
        if method == "auto":
            source = load_image(source)
            method = "sketch" if looks_like_drawing(source) else "hed"
        if method == "sketch":
            return edges_mod.normalize_sketch(source, style).image
        return edges_mod.photo_to_edges(load_image(source), method=method, style=style).image

    def sampled(self, deterministic: bool = False) -> bool:
        """Whether samples differ (``is_sampled``)."""
        return is_sampled(self.generator, self.info, deterministic)

    def generate(self, model_input: np.ndarray, *, n: int = 1, seed: int = 0,
                 deterministic: bool = False, batch_size: int | None = None, first: int = 0) -> list[np.ndarray]:
        """Run the generator on one prepared input; n seeded samples (dropout on) or one canonical.

        Samples are numbered: sample k's dropout masks come from ``sample_seed(seed, k)``, and this
        returns samples ``first .. first + n - 1``, so a request can be rendered in parts (the
        first sample at once, the rest after) and give exactly the pictures of one call.

        On CUDA, running out of memory retries with half the batch, down to one sample at a time,
        then renders the rest on the CPU; ``self.notes`` says when that happened.
        """
        return self._pictures(model_input, n, seed, self.sampled(deterministic), batch_size, first)

    @torch.inference_mode()
    def _pictures(self, model_input: np.ndarray, n: int, seed: int, sampled: bool, batch_size: int | None = None,
                  first: int = 0) -> list[np.ndarray]:
        """``generate`` once it is decided whether the model is sampled."""
        if n < 1 or first < 0:
            raise ValueError(f"n must be at least 1 and first at least 0, got n={n}, first={first}")
        g = self.generator
        n_out = n if sampled else 1
        batch_size = batch_size or n_out
        self.notes = []
        with _torch_threads(1 if self.backend == "onnx" else None):
            x = to_tensor(model_input, self.in_channels)  # (1, C, H, W) in [-1, 1], on the CPU
            x, hw = pad_to_multiple(x, g.config.multiple)
            outputs = self._generate(x, hw, n_out, seed, sampled, batch_size, first if sampled else 0)
        # Without dropout every sample is the same image: repeat it so callers always get n.
        return outputs if sampled else outputs * n

    def _generate(self, x: torch.Tensor, hw: tuple[int, int], n_out: int, seed: int, sampled: bool,
                  batch_size: int, first: int = 0) -> list[np.ndarray]:
        outputs: list[np.ndarray] = []
        start = 0
        while start < n_out:
            ks = list(range(first + start, first + min(start + batch_size, n_out)))
            try:
                y = self._forward(x, ks, seed=seed, sampled=sampled)  # (b, C, H, W) in [-1, 1]
            except torch.OutOfMemoryError:
                if self.device.type != "cuda":
                    raise
                batch_size = self._after_oom(batch_size, len(ks))
                if batch_size == 0:
                    y = self._cpu_renderer()._forward(x, ks, seed=seed, sampled=sampled)
                    self.notes.append(f"GPU out of memory: samples {ks[0] + 1}-{first + n_out} rendered on the CPU")
                    log.warning(self.notes[-1])
                    batch_size = n_out
                else:
                    continue
            outputs += to_images(crop(y, hw))
            start += len(ks)
        return outputs

    def _forward(self, x: torch.Tensor, ks: list[int], *, seed: int, sampled: bool) -> torch.Tensor:
        """Samples ks of a request (dropout on) or the canonical rendering, for a padded CPU x."""
        seeds = sample_seeds(seed, ks) if sampled else None  # None: dropout off
        x = x.expand(len(ks), -1, -1, -1)  # (b, C, H, W), one copy per sample
        if self.backend == "torch":
            return seeded_forward(self.generator, x.to(self.device, self.dtype), seeds)
        h, w = x.shape[-2:]
        masks = self._plan.ones(len(ks), h, w) if seeds is None else self._plan.draw(seeds, h, w)
        return self._fast(x, masks)

    def onnx_export(self) -> tuple[bytes, DropoutPlan]:
        """This model as ONNX (``fast.export_onnx``: fp32, masks as inputs) and its DropoutPlan, for
        ONNX Runtime Web. The ONNX backend's own file; otherwise exported (and cached) once."""
        from . import fast

        if self.backend == "onnx":
            return self._fast.onnx_bytes, self._plan
        if getattr(self, "_export", None) is None:
            import copy

            cpu = copy.deepcopy(self.generator).to("cpu", torch.float32)
            plan = DropoutPlan.of(cpu)
            self._export = (fast.cached_export(cpu, plan, fast.cache_dir()), plan)
        return self._export

    def _after_oom(self, batch_size: int, tried: int) -> int:
        """The next batch size after a CUDA OOM at ``tried`` samples; 0 means go to the CPU."""
        if self.backend == "cuda-graph":
            self._fast.clear()
        torch.cuda.empty_cache()
        smaller = min(batch_size, tried) // 2
        note = (f"GPU out of memory at {tried} sample(s) in one batch: retrying {smaller} at a time"
                if smaller else "GPU out of memory at 1 sample: falling back to the CPU")
        self.notes.append(note)
        log.warning(note)
        return smaller

    def _cpu_renderer(self) -> "Renderer":
        """A CPU copy of this model for requests that do not fit on the GPU (built once)."""
        if self._cpu_fallback is None:
            import copy

            # The fp16 weights as held on the GPU, upcast: fine for a fallback, within fp16 rounding.
            cpu = copy.deepcopy(self.generator).to("cpu", torch.float32)
            self._cpu_fallback = Renderer(cpu, self.info, device="cpu")
        return self._cpu_fallback

    def render(self, request: RenderRequest) -> RenderResult:
        """All n pictures of a request, with what the model saw and the time each stage took."""
        (result,) = self.render_steps(request, first_alone=False)
        return result

    def render_steps(self, request: RenderRequest, *, first_alone: bool = True) -> Iterator[RenderResult]:
        """A request in steps, for a live view: sample 1 as soon as it is ready (``complete`` False),
        then all n, the same pictures as one ``render`` call (samples are numbered). One step when
        there is nothing more to draw (n = 1, a model not sampled) or ``first_alone`` is False.

        Timings are cumulative seconds spent in here (``edges``, ``model``, ``total``), not counting
        the time the caller holds a step.
        """
        t0 = time.perf_counter()
        source = request.source
        if request.strokes is not None and self.input_kind == "edges" and request.edges in ("auto", "sketch"):
            source = request.strokes
        model_input = self.make_edges(source, request.edges, request.size)
        edges_s = time.perf_counter() - t0
        sampled = self.sampled(request.deterministic)
        n = request.n
        parts = [(0, 1), (1, n - 1)] if first_alone and sampled and n > 1 else [(0, n)]
        images: list[np.ndarray] = []
        notes: list[str] = []
        model_s = 0.0
        for first, count in parts:
            t1 = time.perf_counter()
            images += self._pictures(model_input, count, request.seed, sampled, first=first)
            model_s += time.perf_counter() - t1
            notes += self.notes
            timings = {"edges": edges_s, "model": model_s, "total": edges_s + model_s}
            yield RenderResult(model_input, list(images), timings, list(notes), sampled=sampled,
                               complete=len(images) == n)

    def __call__(self, source: Source, *, edges: str = "auto", n: int = 1, seed: int = 0,
                 deterministic: bool = False, size: int | None = None) -> RenderResult:
        """``render`` with the request's fields as keywords."""
        return self.render(RenderRequest(source, n=n, seed=seed, deterministic=deterministic, edges=edges, size=size))
