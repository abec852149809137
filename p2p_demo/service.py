"""What the app does, without the UI: pick models, render sketches and uploads, explain failures.

``app.py`` only lays out components and wires events to a ``ModelManager``. Everything a visitor
can get wrong (an empty canvas, a file that is not an image, a decompression bomb, a model that
cannot be downloaded) comes back as a ``UserMessage`` whose text can be shown as it is; nothing
here raises anything else for bad input, so one bad request never takes the server down.

The service keeps what is the app's own: checking what a visitor sent, the cache of loaded
models, and turning errors into sentences. Rendering is one ``Renderer.render_steps`` call per
request (``p2p_demo.render.RenderRequest``): the renderer makes the edge map, decides whether the
model is sampled, and returns the pictures with their timings.

Threads: Gradio calls these methods from its worker threads. A render gives its generator's dropout
layers their masks for the call, so renders are serialised by one lock; loading a model (possibly
a long Hub download) takes a different lock, so strokes keep rendering with the loaded model while
another one downloads.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from .errors import P2PError

if TYPE_CHECKING:
    from .registry import ModelInfo
    from .render import Renderer, RenderRequest, RenderResult

log = logging.getLogger(__name__)

MAX_SAMPLES = 8
EMPTY_SKETCH = "✏️ Draw on the canvas: a picture appears after every stroke."
EMPTY_UPLOAD = "📷 Upload a photo (or a drawing): its edge map and a picture appear here."

# gr.Progress is called as progress(fraction | None, desc=...); any callable with that shape works.
Progress = Callable[..., Any]


class UserMessage(P2PError):
    """A problem the visitor can act on; ``str(e)`` is the sentence to show them.

    ``level`` is "error" (the request failed) or "warning" (it did not happen, but the app is
    still in a good state, e.g. the previous model stays selected).
    """

    def __init__(self, message: str, *, level: str = "error") -> None:
        super().__init__(message)
        self.level = level


@dataclass
class Output:
    """One render for the UI: the main image, all samples, what the model saw, a status line."""

    image: np.ndarray | None
    samples: list[np.ndarray]
    edges: np.ndarray | None
    status: str
    timings: dict[str, float | int | str] = field(default_factory=dict)  # seconds per stage, then n, seed, ...
    partial: bool = False  # more samples follow (render_sketch_live's first step)

    @classmethod
    def empty(cls, status: str) -> "Output":
        return cls(None, [], None, status, {})


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


class ModelManager:
    """The registry's models, loaded on demand and kept (a few at a time) as Renderers.

    Only registry ids are accepted: the app never loads an arbitrary path or Hub repo.
    """

    def __init__(
        self,
        *,
        weights_dir: str | os.PathLike | None = None,
        default: str | None = None,
        device: str | None = None,
        max_loaded: int = 2,
    ) -> None:
        from . import registry

        self.weights_dir = Path(weights_dir) if weights_dir is not None else None
        self.device = device
        self.max_loaded = max(1, max_loaded)
        self._hub_kwargs: dict[str, Path] = {} if self.weights_dir is None else {"weights_dir": self.weights_dir}
        listed = registry.list_models(**self._hub_kwargs)
        # A bundled model whose folder is missing cannot be offered; say why once, in the log.
        for m in listed:
            if not m.available:
                log.warning("not offered: %s", m.problem)
        self.models = {m.id: m for m in listed if m.available}
        if not self.models:
            raise RuntimeError(f"no model to offer: the registry in {self.weights_dir or registry.WEIGHTS_DIR} lists "
                               "no installed bundled model and no Hub model")
        if default is None:
            default = min(self.models.values(), key=lambda m: (m.source != "bundled", not m.cached)).id
        if default not in self.models:
            raise ValueError(f"default model {default!r} is not an available registry model: {sorted(self.models)}")
        self.default = default
        self._loaded: OrderedDict[str, Renderer] = OrderedDict()  # most recently used last
        self._render_lock = threading.Lock()
        self._load_lock = threading.Lock()

    # -- the registry --------------------------------------------------------------------------
    def choices(self) -> list[tuple[str, str]]:
        """(label, id) pairs for a dropdown, bundled models first."""
        def label(m: ModelInfo) -> str:
            if m.source == "bundled":
                return m.name or m.id
            size = f", {m.size_mb:.0f} MB" if m.size_mb and not m.cached else ""
            return f"{m.name or m.id} (Hub{', cached' if m.cached else ' download'}{size})"

        ordered = sorted(self.models.values(), key=lambda m: m.source != "bundled")
        return [(label(m), m.id) for m in ordered]

    def info(self, model_id: str) -> ModelInfo:
        try:
            return self.models[model_id]
        except (KeyError, TypeError):
            raise UserMessage(f"unknown model {model_id!r}; choose one of: {', '.join(self.models)}") from None

    def describe(self, model_id: str) -> str:
        """One Markdown line: what the model expects, its licence and where it comes from."""
        m = self.info(model_id)
        where = ("bundled with the app" if m.source == "bundled"
                 else f"downloaded from the Hugging Face Hub ([{m.repo_id}](https://huggingface.co/{m.repo_id}))")
        def sentence(text: str) -> str:
            text = text.strip()
            return text if not text or text[-1] in ".!?" else text + "."

        return " ".join(filter(None, [f"**{m.name}**" + (f": {sentence(m.description)}" if m.description else "."),
                                      sentence(f"Expects {m.expects}") if m.expects else "",
                                      f"Licence: {m.license}; {where}."]))

    def is_loaded(self, model_id: str) -> bool:
        return model_id in self._loaded

    # -- loading -------------------------------------------------------------------------------
    def renderer(self, model_id: str, progress: Progress | None = None) -> Renderer:
        """The Renderer of a registry model, loading (and downloading) it if needed."""
        from . import registry
        from .render import Renderer

        info = self.info(model_id)
        with self._load_lock:
            r = self._loaded.get(model_id)
            if r is not None:
                self._loaded.move_to_end(model_id)
                return r
            what = "Loading" if info.source == "bundled" else "Downloading"
            if progress is not None:
                progress(0.0, desc=f"{what} {info.name}…")
            kwargs = dict(self._hub_kwargs)
            if progress is not None:
                kwargs["progress"] = _byte_progress(progress, info.name)
            t0 = time.perf_counter()
            try:
                r = Renderer.load(model_id, device=self.device, **kwargs)
            except registry.HubUnavailable as e:
                raise UserMessage(f"Could not download {info.name}: {e}", level="warning") from e
            except registry.LoadError as e:  # WeightsError, ModelNotFound: the message says what is wrong
                raise UserMessage(f"Could not load {info.name}: {e}", level="warning") from e
            except (OSError, ValueError, RuntimeError) as e:
                log.exception("loading %s failed", model_id)
                raise UserMessage(f"Could not load {info.name}: {e}", level="warning") from e
            log.info("loaded %s on %s in %.1f s", model_id, r.device, time.perf_counter() - t0)
            self._loaded[model_id] = r
            while len(self._loaded) > self.max_loaded:
                old, _ = self._loaded.popitem(last=False)
                log.info("unloaded %s", old)
            if progress is not None:
                progress(1.0, desc=f"{info.name} ready")
            return r

    def switch(self, model_id: str, progress: Progress | None = None) -> str:
        """Make a model ready (download + load + warm) and return its description.

        Raises UserMessage(level="warning") when it cannot be had; the caller keeps its current
        model, which is untouched.
        """
        fresh = not self.is_loaded(model_id)
        r = self.renderer(model_id, progress)
        if fresh:
            self._warm(r)
        return self.describe(model_id)

    def warm(self, model_id: str | None = None) -> float:
        """Load a model and run one throw-away render so the first real stroke is fast."""
        t0 = time.perf_counter()
        self._warm(self.renderer(model_id or self.default))
        return time.perf_counter() - t0

    def _warm(self, r: Renderer) -> None:
        from .render import RenderRequest

        drawing = np.full((256, 256), 255, np.uint8)
        drawing[60:200, 126:130] = 0
        drawing[126:130, 60:200] = 0
        with self._render_lock:
            r.render(RenderRequest(drawing, edges="sketch" if r.input_kind == "edges" else "none"))

    # -- rendering -----------------------------------------------------------------------------
    def render_sketch(self, value: object, *, model_id: str, n: object = 1, seed: object = 0,
                      deterministic: object = False) -> Output:
        """Render the sketch canvas's value: a PNG data URL (``p2p_demo.canvas``), "" when blank.

        A blank or cleared canvas is not an error: it gives an empty Output with a hint. A value
        the canvas cannot have sent is refused with a UserMessage.
        """
        request = self._sketch_request(value, n, seed, deterministic)
        if request is None:
            return Output.empty(EMPTY_SKETCH)
        return next(self._render(request, model_id=model_id, empty=EMPTY_SKETCH))

    def render_sketch_live(self, value: object, *, model_id: str, n: object = 1, seed: object = 0,
                           deterministic: object = False) -> Iterator[Output]:
        """render_sketch in two steps, for the live canvas: the output (sample 1) as soon as it is
        ready, then all n samples. Same pictures as one render_sketch call (samples are numbered)."""
        request = self._sketch_request(value, n, seed, deterministic)
        if request is None:
            yield Output.empty(EMPTY_SKETCH)
            return
        yield from self._render(request, model_id=model_id, empty=EMPTY_SKETCH, live=True)

    def render_upload(self, file: object, *, model_id: str, n: object = 1, seed: object = 0,
                      deterministic: object = False, edges: str = "auto") -> Output:
        """Render an uploaded file: a path, or Gradio's file payload ({"path": ...}) unprocessed.

        The file is decoded here, by ``load_image``, and not by Gradio, so every bad upload gets
        the same explanation whether it came from the browser or from an API client.
        """
        path = file.get("path") if isinstance(file, dict) else file
        if path is None:
            return Output.empty(EMPTY_UPLOAD)
        if not isinstance(path, (str, os.PathLike)):
            raise UserMessage("expected an image file")
        from .render import EDGE_METHODS, RenderRequest

        if edges not in EDGE_METHODS:
            raise UserMessage(f"edges must be one of {', '.join(EDGE_METHODS)}, got {edges!r}")
        n, seed, deterministic = _options(n, seed, deterministic)
        request = RenderRequest(str(path), n=n, seed=seed, deterministic=deterministic, edges=edges)
        return next(self._render(request, model_id=model_id, empty=None))

    def _sketch_request(self, value: object, n: object, seed: object, deterministic: object) -> RenderRequest | None:
        """The request for a canvas value (None: a blank canvas). Strokes are redrawn from their
        vectors, as the browser does, for models that take edge maps; a drawing started from an
        example picture goes through the raster pipeline."""
        from .canvas import CanvasError, decode, strokes
        from .render import RenderRequest

        n, seed, deterministic = _options(n, seed, deterministic)
        try:
            png = decode(value)
            vectors = strokes(png) if png is not None else None
        except CanvasError as e:
            raise UserMessage(f"Cannot read the drawing: {e}. Clear the canvas and draw again.") from e
        if png is None:  # never drawn, or cleared
            return None
        return RenderRequest(png, n=n, seed=seed, deterministic=deterministic, edges="sketch", strokes=vectors)

    def _render(self, request: RenderRequest, *, model_id: str, empty: str | None,
                live: bool = False) -> Iterator[Output]:
        """The request's Outputs: one, or (``live``) sample 1 first, then all n. Any failure
        becomes a UserMessage; nothing drawn becomes ``Output.empty(empty)`` when ``empty`` is set."""
        from .edges import NothingDrawn
        from .image import ImageError

        r = self.renderer(model_id)
        steps = r.render_steps(request, first_alone=live)
        request_s = 0.0  # the time spent here, not counting the caller's between steps
        while True:
            t0 = time.perf_counter()
            try:
                with self._render_lock:
                    result = next(steps, None)
            except NothingDrawn as e:
                if empty is not None:
                    yield Output.empty(empty)
                    return
                raise UserMessage(f"No lines found in this image ({e}); try a photo with a clear subject, "
                                  "or the Canny edges.") from e
            except ImageError as e:
                raise UserMessage(f"Cannot use this file: {e}") from e
            except MemoryError as e:
                raise UserMessage("This image is too large to process; use a smaller one.") from e
            except Exception as e:  # a bug or an input nobody foresaw: say so, log it, keep serving
                log.exception("render failed (model %s, edges %s)", model_id, request.edges)
                raise UserMessage(f"Rendering failed ({type(e).__name__}: {e}).") from e
            if result is None:
                return
            request_s += time.perf_counter() - t0
            yield self._output(model_id, r, request, result, request_s, live)

    def _output(self, model_id: str, r: Renderer, request: RenderRequest, result: RenderResult, request_s: float,
                live: bool) -> Output:
        """One render for the UI. A model that is not sampled gives one picture (the live canvas
        shows it n times, as its gallery has n places)."""
        samples = result.images if result.sampled or live else result.images[:1]
        n, seed = len(samples), request.seed
        if result.sampled and not result.complete:
            how = f"sample 1 of {request.n}, seed {seed}"
        elif result.sampled:
            how = f"{n} sample{'s' * (n > 1)}, seed {seed}"
        else:
            how = ("deterministic" if request.deterministic
                   else "deterministic (this model is meant to run with dropout off)")
        status = (f"{self.info(model_id).name} · {how} · model {_ms(result.timings['model'])}, "
                  f"edges {_ms(result.timings['edges'])} on the server ({r.device.type.upper()})")
        timings: dict[str, float | int | str] = {k: round(v, 4) for k, v in result.timings.items()}
        timings.update(request=round(request_s, 4), model_id=model_id, n=n, seed=seed, device=r.device.type)
        return Output(samples[0], samples, result.edges, status, timings, partial=not result.complete)


def _options(n: object, seed: object, deterministic: object) -> tuple[int, int, bool]:
    """Validate the options an API client (or the UI) sent: n in 1..8, a seed in 0..2**32-1 (JSON
    numbers with no fraction), deterministic true or false. Nothing is coerced: "3", "1e3", "false",
    [] and 5 are refused, as a client that sends them has misread the API. None (a cleared field)
    is the default."""
    n = 1 if n is None else n
    seed = 0 if seed is None else seed
    deterministic = False if deterministic is None else deterministic
    if not _whole(n) or not 1 <= n <= MAX_SAMPLES:
        raise UserMessage(f"samples must be a whole number from 1 to {MAX_SAMPLES}, got {n!r}")
    if not _whole(seed) or not 0 <= seed < 2**32:
        raise UserMessage(f"seed must be a whole number from 0 to 4294967295, got {seed!r}")
    if not isinstance(deterministic, bool):
        raise UserMessage(f"deterministic must be true or false, got {deterministic!r}")
    return int(n), int(seed), deterministic


def _whole(x: object) -> bool:
    """A JSON number with no fraction (an int, or a float such as 3.0); not a bool, not a string."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    return isinstance(x, int) or (math.isfinite(x) and x == int(x))


def _byte_progress(progress: Progress, name: str) -> Callable[[int, int | None, str], None]:
    """hub's progress(done_bytes, total_bytes, filename) -> progress(fraction, desc=...) as gr.Progress."""

    def report(done: int, total: int | None, filename: str) -> None:
        mb = f"{done / 2**20:.0f}" + (f" / {total / 2**20:.0f} MB" if total else " MB")
        progress(done / total if total else None, desc=f"Downloading {name}: {mb}")

    return report


def new_seed() -> int:
    """A fresh seed for the 🎲 button (small enough to read and retype)."""
    return int.from_bytes(os.urandom(4), "little") % 1_000_000
