"""What the browser renderer gets from the app: the runtime, the model files, the headers.

Routes (added to Gradio's FastAPI app through ``launch(app_kwargs=app_kwargs(models))``, which
``p2p_demo.gradio_glue.launch`` does; every one a plain GET of a file or a small JSON, none of them
renders anything):

* ``/p2p/js/<name>``: this package's browser modules (``static/p2p_*.js``).
* ``/p2p/ort/<tag>/<name>``: ONNX Runtime Web (``p2p_demo.webrt``), and its ``LICENSE``; the tag is
  the pinned version and its tarball's hash.
* ``/p2p/models.json``: the registry's models, which of them can render in the browser and why not,
  and whether the runtime is ready (the page polls it while the app fetches the runtime).
* ``/p2p/model/<id>.json``: a browser-capable model's manifest (line style, dropout plan, ONNX URL);
  ``/p2p/model/<id>/<key>.onnx``: its ONNX file (:func:`browser_onnx` of the server's own export,
  which ``p2p_demo.fast`` caches on disk by a hash of the weights).

The runtime and the model files are large (14 MB of WASM, 7-14 MB of model) and served compressed:
their brotli and gzip copies are made once (at fetch time, at the first export) and kept on disk;
a request gets the copy its ``Accept-Encoding`` allows, else the file itself. Their URLs name their
content, so they are cached for a year (``immutable``).

Every response gets ``Cross-Origin-Opener-Policy: same-origin`` and ``Cross-Origin-Embedder-Policy:
require-corp``: the page becomes cross-origin isolated, which WebAssembly threads need
(SharedArrayBuffer). Everything the page loads is same-origin, so nothing else changes; inside a
cross-origin iframe (a Space shown on huggingface.co) the page is not isolated and the runtime runs
one thread. The model routes are bound to one :class:`BrowserModels` (:func:`routes`).
"""

from __future__ import annotations

import logging
import re
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from . import webrt
from .errors import P2PError

log = logging.getLogger(__name__)

MAX_BROWSER_MB = 64  # larger models (the Hub's 218 MB generator) always render on the server
JS_FILES = ("p2p_browser.js", "p2p_masks.js", "p2p_strokes.js")
ISOLATION = {b"cross-origin-opener-policy": b"same-origin", b"cross-origin-embedder-policy": b"require-corp"}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,127}$")
IMMUTABLE = "public, max-age=31536000, immutable"


def browser_onnx(data: bytes) -> tuple[bytes, str]:
    """The ONNX file the browser gets, and its variant's name (``fp16`` or ``fp32``).

    Weights that fp16 holds exactly (the bundled models store theirs as fp16) travel as fp16 and are
    cast back to fp32 when the session loads (ONNX Runtime folds the ``Cast`` into a constant): half
    the bytes, the same numbers, so the same pictures. Any other model keeps its fp32 file.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(data)
    graph = model.graph
    weights = [t for t in graph.initializer if t.data_type == TensorProto.FLOAT and int(np.prod(t.dims)) >= 256]
    arrays = [numpy_helper.to_array(t) for t in weights]
    if not weights or any(not np.array_equal(a.astype(np.float16).astype(np.float32), a) for a in arrays):
        return data, "fp32"
    casts = []
    for t, a in zip(weights, arrays):
        half = numpy_helper.from_array(a.astype(np.float16), f"{t.name}.fp16")
        t.CopyFrom(half)
        casts.append(helper.make_node("Cast", [half.name], [half.name[:-len(".fp16")]], to=TensorProto.FLOAT,
                                      name=f"{half.name}.cast"))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)  # the casts first: nodes stay in topological order
    return model.SerializeToString(), "fp16"


def accepted(request: Request, offered: tuple[str, ...]) -> str | None:
    """The first of ``offered`` content codings that the request's ``Accept-Encoding`` allows (a
    coding named with ``q=0`` is refused, ``*`` allows the rest); None: send the file itself."""
    allowed: dict[str, float] = {}
    for part in request.headers.get("accept-encoding", "").split(","):
        name, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if name.strip():
            allowed[name.strip().lower()] = q
    for coding in offered:
        if allowed.get(coding, allowed.get("*", 0.0)) > 0:
            return coding
    return None


def _encoded(request: Request, copies: dict[str, Any], media_type: str) -> Response:
    """A file (bytes or a path) as the best stored copy the request accepts: ``copies`` maps a content
    coding (``br``, ``gzip``) to that copy and ``"identity"`` to the file itself."""
    coding = accepted(request, tuple(c for c in webrt.ENCODINGS if c in copies))
    body = copies[coding or "identity"]
    headers = {"Cache-Control": IMMUTABLE, "Vary": "Accept-Encoding"}
    if coding:
        headers["Content-Encoding"] = coding
    if isinstance(body, Path):
        return FileResponse(body, media_type=media_type, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


class NotInBrowser(P2PError):
    """This model renders on the server only; ``str(e)`` says why (shown in the status line)."""


class BrowserModels:
    """Which registry models the browser can run, their manifests and ONNX files."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self._exports: dict[str, tuple[str, dict[str, bytes], dict]] = {}
        self._lock = threading.Lock()

    def why_not(self, model_id: str) -> str | None:
        """None when the model can render in the browser (without loading it), else the reason."""
        info = self.manager.info(model_id)
        if info.source != "bundled":
            return "Hub models render on the server"
        if getattr(info, "input", "edges") != "edges":
            return "this model takes pictures, not drawings"
        return None

    def listing(self) -> dict:
        models = []
        for label, mid in self.manager.choices():
            why = self.why_not(mid)
            models.append({"id": mid, "label": label, "browser": why is None, **({"why": why} if why else {})})
        why = webrt.why()
        return {"runtime": {"available": why is None, "state": webrt.state().value, "version": webrt.VERSION,
                            "base": f"p2p/ort/{webrt.TAG}/", **({"why": why} if why else {})},
                "models": models}

    def export(self, model_id: str) -> tuple[str, dict[str, bytes], dict]:
        """(key, the ONNX file's copies by content coding, manifest) of a browser-capable model; loads
        it if needed. The copies: ``identity`` (the file itself, :func:`browser_onnx`), ``br``, ``gzip``."""
        why = self.why_not(model_id)
        if why:
            raise NotInBrowser(why)
        with self._lock:
            if model_id in self._exports:
                return self._exports[model_id]
        r = self.manager.renderer(model_id)
        data, plan = r.onnx_export()
        if len(data) > MAX_BROWSER_MB * 2**20:
            raise NotInBrowser(f"the model is {len(data) / 2**20:.0f} MB; the browser gets models up to {MAX_BROWSER_MB} MB")
        from .fast import cache_dir, weights_key

        data, variant = browser_onnx(data)
        key = f"{weights_key(r.generator)}-{variant}"
        copies = _compressed_copies(data, cache_dir(), key)
        style = r.line_style
        info = self.manager.info(model_id)
        manifest = {
            "id": model_id, "name": info.name, "onnx": f"p2p/model/{model_id}/{key}.onnx", "bytes": len(data),
            "weights": variant, "transfer": {c: len(b) for c, b in copies.items() if c != "identity"},
            "in_channels": r.in_channels, "multiple": r.generator.config.multiple,
            "style": {"size": style.size, "stroke_width": style.stroke_width, "margin": style.margin},
            "sampling": bool(info.dropout_sampling and r.generator.has_dropout),
            "plan": plan.to_dict(),
        }
        with self._lock:
            self._exports[model_id] = (key, copies, manifest)
        return key, copies, manifest

    def exported(self, model_id: str, key: str) -> dict[str, bytes] | None:
        """The copies of an ONNX file :meth:`export` handed out under ``key``, else None (only files a
        manifest named are served)."""
        with self._lock:
            entry = self._exports.get(model_id)
        return entry[1] if entry is not None and entry[0] == key else None


def _compressed_copies(data: bytes, folder: Path | None, key: str) -> dict[str, bytes]:
    """``data`` and its compressed copies (``webrt.ENCODINGS``), read from ``folder/browser/<key>.onnx.<ext>``
    when an earlier export stored them there (``folder`` None: made in memory every time)."""
    from .files import atomic_write

    copies = {"identity": data}
    for coding in webrt.ENCODINGS:
        path = folder / "browser" / f"{key}.onnx{webrt.SUFFIX[coding]}" if folder else None
        try:
            if path is not None and path.is_file():
                copies[coding] = path.read_bytes()
                continue
        except OSError:
            pass
        copies[coding] = webrt.compress(data, coding)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, lambda p, b=copies[coding]: p.write_bytes(b))
            except OSError as e:
                log.warning("cannot cache the browser's model file in %s (%s); keeping it in memory", path.parent, e)
    return copies


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})


async def js_file(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in JS_FILES:
        return _error(404, f"no such script {name!r}")
    text = resources.files("p2p_demo").joinpath("static", name).read_text(encoding="utf-8")
    return Response(text, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


async def runtime_file(request: Request) -> Response:
    tag, name = request.path_params["tag"], request.path_params["name"]
    if tag != webrt.TAG or name not in (*webrt.FILES, webrt.LICENSE):
        return _error(404, f"no such runtime file {tag}/{name}")
    if name == webrt.LICENSE:
        return Response(webrt.licence_text(), media_type="text/plain")
    if webrt.state() is not webrt.State.READY:  # not there, or still landing and being compressed
        return _error(404, webrt.why() or "ONNX Runtime Web is not ready")
    path = webrt.folder() / name
    copies = {"identity": path, **{c: p for c in webrt.ENCODINGS if (p := webrt.compressed(path, c))}}
    return _encoded(request, copies, "application/wasm" if name.endswith(".wasm") else "text/javascript")


async def models_json(web: BrowserModels, request: Request) -> Response:
    return JSONResponse(web.listing(), headers={"Cache-Control": "no-store"})


def _manifest_sync(web: BrowserModels, model_id: str) -> Response:
    from .service import UserMessage

    try:
        _, _, manifest = web.export(model_id)
    except (NotInBrowser, UserMessage) as e:
        return _error(409, str(e))
    except Exception as e:  # an exporter that cannot handle a model: the server renders it
        log.exception("no browser export for %s", model_id)
        return _error(409, f"this model cannot be exported for the browser ({type(e).__name__})")
    return JSONResponse(manifest, headers={"Cache-Control": "no-store"})


async def model_json(web: BrowserModels, request: Request) -> Response:
    from starlette.concurrency import run_in_threadpool

    model_id = request.path_params["model_id"]
    if not _ID.match(model_id) or model_id not in web.manager.models:
        return _error(404, f"unknown model {model_id!r}")
    return await run_in_threadpool(_manifest_sync, web, model_id)


async def model_onnx(web: BrowserModels, request: Request) -> Response:
    model_id, key = request.path_params["model_id"], request.path_params["key"]
    if model_id not in web.manager.models:
        return _error(404, f"unknown model {model_id!r}")
    copies = web.exported(model_id, key)
    if copies is None:
        return _error(404, "no such model file; fetch the model's manifest first")
    return _encoded(request, copies, "application/octet-stream")


class CrossOriginIsolation:
    """ASGI middleware: COOP/COEP on every HTTP response (see the module docstring)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in ISOLATION]
                message = {**message, "headers": headers + list(ISOLATION.items())}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def routes(web: BrowserModels) -> list[Route]:
    """The browser renderer's routes, the model routes bound to ``web``."""
    def bound(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            return await handler(web, request)
        return endpoint

    return [
        Route("/p2p/js/{name}", js_file),
        Route("/p2p/ort/{tag}/{name}", runtime_file),
        Route("/p2p/models.json", bound(models_json)),
        Route("/p2p/model/{model_id:path}/{key}.onnx", bound(model_onnx)),
        Route("/p2p/model/{model_id:path}.json", bound(model_json)),
    ]


def app_kwargs(web: BrowserModels) -> dict:
    """For ``demo.launch(app_kwargs=...)``: the routes above and the isolation headers (a new dict
    each time: Gradio adds its own keys to the one it gets)."""
    return {"routes": routes(web), "middleware": [Middleware(CrossOriginIsolation)]}
