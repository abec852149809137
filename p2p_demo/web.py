"""What the browser renderer gets from the app: the runtime, the model files, the headers.

Routes (added to Gradio's FastAPI app through ``launch(app_kwargs=app_kwargs())``; every one a
plain GET of a file or a small JSON, none of them renders anything):

* ``/p2p/js/<name>``: this package's browser modules (``static/p2p_*.js``).
* ``/p2p/ort/<version>/<name>``: ONNX Runtime Web (``p2p_demo.webrt``), and its ``LICENSE``.
* ``/p2p/models.json``: the registry's models, which of them can render in the browser and why not.
* ``/p2p/model/<id>.json``: a browser-capable model's manifest (line style, dropout plan, ONNX URL);
  ``/p2p/model/<id>/<key>.onnx``: its ONNX file (the server's own export, cached on disk by a hash
  of the weights, ``p2p_demo.fast``), ``Cache-Control: immutable`` since the key names the content.

Every response gets ``Cross-Origin-Opener-Policy: same-origin`` and ``Cross-Origin-Embedder-Policy:
require-corp``: the page becomes cross-origin isolated, which WebAssembly threads need
(SharedArrayBuffer). Everything the page loads is same-origin, so nothing else changes; inside a
cross-origin iframe (a Space shown on huggingface.co) the page is not isolated and the runtime runs
one thread. The handlers find the app's ``BrowserModels`` as ``demo.p2p_web`` (set by app.py).
"""

from __future__ import annotations

import logging
import re
import threading
from importlib import resources
from typing import Any

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from . import webrt

log = logging.getLogger(__name__)

MAX_BROWSER_MB = 64  # larger models (the Hub's 218 MB generator) always render on the server
JS_FILES = ("p2p_browser.js", "p2p_masks.js", "p2p_strokes.js")
ISOLATION = {b"cross-origin-opener-policy": b"same-origin", b"cross-origin-embedder-policy": b"require-corp"}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,127}$")


class NotInBrowser(Exception):
    """This model renders on the server only; ``str(e)`` says why (shown in the status line)."""


class BrowserModels:
    """Which registry models the browser can run, their manifests and ONNX files."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self._exports: dict[str, tuple[str, bytes, dict]] = {}
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
        runtime = webrt.available()
        return {"runtime": {"available": runtime, "version": webrt.VERSION, "base": f"p2p/ort/{webrt.VERSION}/",
                            **({} if runtime else {"why": "ONNX Runtime Web is not installed on the server "
                                                   "(python -m p2p_demo fetch-web-runtime)"})},
                "models": models}

    def export(self, model_id: str) -> tuple[str, bytes, dict]:
        """(key, ONNX bytes, manifest) of a browser-capable model; loads it if needed."""
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
        from .fast import weights_key

        key = weights_key(r.generator)
        style = r.line_style
        info = self.manager.info(model_id)
        manifest = {
            "id": model_id, "name": info.name, "onnx": f"p2p/model/{model_id}/{key}.onnx", "bytes": len(data),
            "in_channels": r.in_channels, "multiple": r.generator.config.multiple,
            "style": {"size": style.size, "stroke_width": style.stroke_width, "margin": style.margin},
            "sampling": bool(info.dropout_sampling and r.generator.has_dropout),
            "plan": plan.to_dict(),
        }
        with self._lock:
            self._exports[model_id] = (key, data, manifest)
        return key, data, manifest


def _models(request: Request) -> BrowserModels:
    web = getattr(getattr(request.app, "blocks", None), "p2p_web", None)
    if web is None:
        raise LookupError("this Gradio app has no browser renderer (build it with app.build_app)")
    return web


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})


async def js_file(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in JS_FILES:
        return _error(404, f"no such script {name!r}")
    text = resources.files("p2p_demo").joinpath("static", name).read_text(encoding="utf-8")
    return Response(text, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


async def runtime_file(request: Request) -> Response:
    version, name = request.path_params["version"], request.path_params["name"]
    if version != webrt.VERSION or name not in (*webrt.FILES, webrt.LICENSE):
        return _error(404, f"no such runtime file {version}/{name}")
    if name == webrt.LICENSE:
        return Response(webrt.licence_text(), media_type="text/plain")
    path = webrt.folder() / name
    if not path.is_file():
        return _error(404, "ONNX Runtime Web is not installed on the server (python -m p2p_demo fetch-web-runtime)")
    media = "application/wasm" if name.endswith(".wasm") else "text/javascript"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "public, max-age=31536000, immutable"})


async def models_json(request: Request) -> Response:
    return JSONResponse(_models(request).listing(), headers={"Cache-Control": "no-store"})


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


async def model_json(request: Request) -> Response:
    from starlette.concurrency import run_in_threadpool

    model_id = request.path_params["model_id"]
    web = _models(request)
    if not _ID.match(model_id) or model_id not in web.manager.models:
        return _error(404, f"unknown model {model_id!r}")
    return await run_in_threadpool(_manifest_sync, web, model_id)


async def model_onnx(request: Request) -> Response:
    model_id, key = request.path_params["model_id"], request.path_params["key"]
    web = _models(request)
    if model_id not in web.manager.models:
        return _error(404, f"unknown model {model_id!r}")
    with web._lock:
        entry = web._exports.get(model_id)
    if entry is None or entry[0] != key:  # only files a manifest handed out
        return _error(404, "no such model file; fetch the model's manifest first")
    return Response(entry[1], media_type="application/octet-stream",
                    headers={"Cache-Control": "public, max-age=31536000, immutable"})


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


ROUTES = [
    Route("/p2p/js/{name}", js_file),
    Route("/p2p/ort/{version}/{name}", runtime_file),
    Route("/p2p/models.json", models_json),
    Route("/p2p/model/{model_id:path}/{key}.onnx", model_onnx),
    Route("/p2p/model/{model_id:path}.json", model_json),
]


def app_kwargs() -> dict:
    """For ``demo.launch(app_kwargs=...)``: the routes above and the isolation headers (a new dict
    each time: Gradio adds its own keys to the one it gets)."""
    return {"routes": list(ROUTES), "middleware": [Middleware(CrossOriginIsolation)]}


def install(demo: Any, manager: Any) -> None:
    """Serve the browser renderer from ``demo``: its launch() gets the routes and headers."""
    demo.p2p_web = BrowserModels(manager)
    launch = demo.launch

    def launch_with_browser_renderer(*args: Any, **kwargs: Any) -> Any:
        kwargs["app_kwargs"] = {**app_kwargs(), **(kwargs.get("app_kwargs") or {})}
        return launch(*args, **kwargs)

    demo.launch = launch_with_browser_renderer
