"""ONNX Runtime Web, the browser's copy of the model runtime: which files, where they live, how they arrive.

The app serves everything the browser renderer needs itself (``p2p_demo.web``); nothing comes from
a CDN. The runtime is the npm package ``onnxruntime-web`` (MIT, Microsoft), pinned to one version
and checked against the registry's sha512 integrity of its tarball. It is not vendored: the few
files needed weigh 41 MB (the WASM build, 14 MB, and the WebGPU build, 27 MB), more than the rest of
the repository. It is fetched once with ``npm pack`` (:func:`files.npm_pack`, like the training data)
into ``~/.cache/p2p_demo/onnxruntime-web/<version>`` (``P2P_WEB_RUNTIME`` to put it elsewhere):

* by the app itself at start (:func:`fetch_in_background`, called by ``app.py``): a Hugging Face
  Space runs nothing but ``pip install -r requirements.txt`` and ``python app.py``, with npm from
  ``packages.txt``. Until it is there every drawing renders on the server and the page says why;
  the page switches to the browser by itself when it is ready (it polls ``/p2p/models.json``).
* or by hand, ``python -m p2p_demo fetch-web-runtime`` (``scripts/app.sh`` and ``scripts/test.sh``).

Each file is also stored compressed beside it (``<name>.br`` and ``<name>.gz``, made once at fetch
time): the 14 MB WASM binary travels as 2.7 MB of brotli, or 3.7 MB of gzip.
"""

from __future__ import annotations

import base64
import enum
import gzip
import logging
import os
import tarfile
import tempfile
import threading
from importlib import resources
from pathlib import Path

from .errors import P2PError
from .files import NpmPackError, atomic_write, npm_pack

log = logging.getLogger(__name__)

PACKAGE = "onnxruntime-web"
VERSION = "1.30.0"
INTEGRITY = "sha512-q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1SigqR4CXAfKYQ=="
# The URL folder of the runtime's files: the version and the tarball's own hash, so a cached copy is
# never stale (the files are served immutable, p2p_demo.web).
TAG = f"{VERSION}-{base64.b64decode(INTEGRITY.removeprefix('sha512-'))[:6].hex()}"
# The WASM bundle and its threaded SIMD binary; the WebGPU bundle and its (asyncify) binary.
FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm",
         "ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm")
LICENSE = "LICENSE"  # MIT, shipped in this repository (the npm package names its licence but holds no file)
ENV = "P2P_WEB_RUNTIME"
# Content codings stored beside each file, in the server's order of preference. Brotli comes with
# gradio; gzip is the fallback for browsers that do not offer br (Chromium offers it over HTTPS and on
# localhost). The levels trade size for the time the app spends at start (14 MB of WASM, one loaded
# core): brotli 7 gives 2.73 MB in 2.6 s (9: 2.69 MB, 5.3 s; 11: 2.30 MB, 40 s), gzip 6 3.67 MB in 1.6 s.
ENCODINGS = ("br", "gzip")
SUFFIX = {"br": ".br", "gzip": ".gz"}


class RuntimeMissing(P2PError, RuntimeError):
    """The runtime's files are not there (or could not be fetched)."""


def folder() -> Path:
    value = os.environ.get(ENV)
    return Path(value) if value else Path.home() / ".cache" / "p2p_demo" / PACKAGE / VERSION


def available(where: Path | None = None) -> bool:
    where = where or folder()
    return all((where / name).is_file() for name in FILES)


def licence_text() -> str:
    return resources.files("p2p_demo").joinpath("static", "onnxruntime-web.LICENSE").read_text(encoding="utf-8")


def compress(data: bytes, encoding: str) -> bytes:
    """``data`` in one HTTP content coding (``br`` or ``gzip``)."""
    if encoding == "br":
        import brotli

        return brotli.compress(data, quality=7)
    if encoding == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    raise ValueError(f"unknown content coding {encoding!r}; expected one of {ENCODINGS}")


def compressed(path: Path, encoding: str) -> Path | None:
    """The stored ``encoding`` copy of a runtime file, or None when it is missing or older than the file."""
    packed = path.with_name(path.name + SUFFIX[encoding])
    try:
        return packed if packed.stat().st_mtime_ns >= path.stat().st_mtime_ns else None
    except OSError:
        return None


def precompress(where: Path | None = None) -> None:
    """Store every runtime file's compressed copies beside it (those missing only), each written whole."""
    where = where or folder()
    for name in FILES:
        path = where / name
        for encoding in ENCODINGS:
            if compressed(path, encoding) is None:
                data = compress(path.read_bytes(), encoding)
                atomic_write(path.with_name(name + SUFFIX[encoding]), lambda p, data=data: p.write_bytes(data))


def fetch(where: Path | None = None, *, npm: str = "npm") -> Path:
    """Fetch the pinned package with ``npm pack``, check its integrity, unpack the files needed and
    store their compressed copies.

    Idempotent: returns soon when the files are there. Raises RuntimeMissing saying why not.
    """
    where = where or folder()
    if not available(where):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                tgz = npm_pack(PACKAGE, VERSION, INTEGRITY, tmp, npm=npm)
            except NpmPackError as e:
                raise RuntimeMissing(f"{e} (the browser renderer; python -m p2p_demo fetch-web-runtime fetches it)") from None
            with tarfile.open(tgz) as tar:  # every file read before any lands
                files = {name: tar.extractfile(tar.getmember(f"package/dist/{name}")).read() for name in FILES}
            files[LICENSE] = licence_text().encode("utf-8")
        where.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():  # each file lands whole, the binaries last
            atomic_write(where / name, lambda p, data=data: p.write_bytes(data))
        log.info("fetched %s@%s into %s", PACKAGE, VERSION, where)
    precompress(where)
    return where


# --------------------------------------------------------------------------------------------
# Fetched by the app at start


class State(str, enum.Enum):
    READY = "ready"  # the files are there: the browser may render
    FETCHING = "fetching"  # the app is fetching them now
    FAILED = "failed"  # the app tried and could not (why: see why())
    MISSING = "missing"  # not there, and nobody is fetching them


_lock = threading.Lock()
_fetch: dict = {"thread": None, "error": None}


def state() -> State:
    """Where the runtime stands for this process: ready, being fetched, failed, or missing."""
    with _lock:
        thread, error = _fetch["thread"], _fetch["error"]
    if thread is not None and thread.is_alive():
        return State.FETCHING
    if available():
        return State.READY
    return State.FAILED if error else State.MISSING


def why() -> str | None:
    """Why the browser cannot render yet (None when it can), as the page shows it."""
    s = state()
    if s is State.READY:
        return None
    if s is State.FETCHING:
        return "the server is still fetching ONNX Runtime Web; this page switches to your browser when it is ready"
    if s is State.FAILED:
        with _lock:
            return f"ONNX Runtime Web could not be fetched ({_fetch['error']})"
    return "ONNX Runtime Web is not installed on the server (python -m p2p_demo fetch-web-runtime)"


def fetch_in_background(*, npm: str = "npm") -> threading.Thread | None:
    """Fetch the runtime in a daemon thread unless it is there or already on its way; None if nothing to do.

    Never raises and never stops the app: a failure (no npm, no network, a bad hash) leaves server
    rendering and one warning line in the log; :func:`why` tells the page.
    """

    def run() -> None:
        try:
            where = fetch(npm=npm)
        except Exception as e:  # RuntimeMissing, or an unforeseen error (a full disk): the server renders
            message = str(e) if isinstance(e, RuntimeMissing) else f"{type(e).__name__}: {e}"
            with _lock:
                _fetch["error"] = message
            log.warning("rendering in the browser is off, drawings render on the server: %s", message)
        else:
            log.info("rendering in the browser is on (%s@%s in %s)", PACKAGE, VERSION, where)

    with _lock:
        thread = _fetch["thread"]
        if thread is not None and thread.is_alive():
            return None
        where = folder()
        if available(where) and all(compressed(where / n, e) for n in FILES for e in ENCODINGS):
            return None
        _fetch["error"] = None
        thread = threading.Thread(target=run, name="p2p-fetch-web-runtime", daemon=True)
        _fetch["thread"] = thread
        thread.start()
    return thread
