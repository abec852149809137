"""ONNX Runtime Web, the browser's copy of the model runtime: which files, where they live, how they arrive.

The app serves everything the browser renderer needs itself (``p2p_demo.web``); nothing comes from
a CDN. The runtime is the npm package ``onnxruntime-web`` (MIT, Microsoft), pinned to one version
and checked against the registry's sha512 integrity of its tarball. It is not vendored: the few
files needed weigh 41 MB (the WASM build, 14 MB, and the WebGPU build, 27 MB), more than the rest of
the repository. ``python -m p2p_demo fetch-web-runtime`` (run by ``scripts/app.sh`` and
``scripts/test.sh``) fetches it once with ``npm pack``, like the OpenMoji data, into
``~/.cache/p2p_demo/onnxruntime-web/<version>`` (``P2P_WEB_RUNTIME`` to put it elsewhere). Without
it the app still works: every drawing renders on the server, and the status line says why.
"""

from __future__ import annotations

import logging
import os
import tarfile
import tempfile
from importlib import resources
from pathlib import Path

from .files import NpmPackError, atomic_write, npm_pack

log = logging.getLogger(__name__)

PACKAGE = "onnxruntime-web"
VERSION = "1.30.0"
INTEGRITY = "sha512-q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1SigqR4CXAfKYQ=="
# The WASM bundle and its threaded SIMD binary; the WebGPU bundle and its (asyncify) binary.
FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm",
         "ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm")
LICENSE = "LICENSE"  # MIT, shipped in this repository (the npm package names its licence but holds no file)
ENV = "P2P_WEB_RUNTIME"


class RuntimeMissing(RuntimeError):
    """The runtime's files are not there (or could not be fetched)."""


def folder() -> Path:
    value = os.environ.get(ENV)
    return Path(value) if value else Path.home() / ".cache" / "p2p_demo" / PACKAGE / VERSION


def available(where: Path | None = None) -> bool:
    where = where or folder()
    return all((where / name).is_file() for name in FILES)


def licence_text() -> str:
    return resources.files("p2p_demo").joinpath("static", "onnxruntime-web.LICENSE").read_text(encoding="utf-8")


def fetch(where: Path | None = None, *, npm: str = "npm") -> Path:
    """Fetch the pinned package with ``npm pack``, check its integrity, unpack the files needed.

    Idempotent: returns at once when the files are there. Raises RuntimeMissing saying why not.
    """
    where = where or folder()
    if available(where):
        return where
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
    return where
