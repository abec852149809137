"""Small file helpers shared by the library, the app and training.

* :func:`atomic_write`: the one way this project writes a file that someone may read while it is
  being written (model folders, ONNX exports, checkpoints, prepared data, the app's image cache).
* :data:`IMAGE_SUFFIXES`: the image files the app and the data tools pick up from a folder.
* :func:`strict_from_dict`: a dataclass from a dict that fails on an unknown key.
* :func:`npm_pack`: a pinned npm package's tarball, fetched with ``npm pack`` and checked against
  the registry's sha512 integrity (the browser runtime and the training data sources use it).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, TypeVar

from .errors import P2PError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

T = TypeVar("T")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, durable: bool = False) -> Path:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then rename it to ``path``.

    A reader, a crash or a kill at any moment sees the old file or the whole new one, never a
    partial one. The temporary name ``.<name>.tmp-<random><suffix>`` lives in the same folder (a
    rename is atomic only within one file system) and keeps the suffix, so writers that add one
    (``np.savez``) do not rename it. The file is created by ``write`` with the usual permissions.
    ``durable=True`` also flushes the file, then the rename, to disk (a checkpoint that must
    survive a power cut). On any error the temporary file is removed and the error raised.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}{path.suffix}")
    try:
        write(tmp)
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:  # the rename itself; some file systems cannot sync a folder, which is fine
        try:
            _fsync(path.parent)
        except OSError:
            pass
    return path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def strict_from_dict(cls: type[T], d: dict[str, Any], what: str) -> T:
    """``cls(**d)`` for a dataclass, raising ValueError that names ``what`` on unknown keys."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {what} {sorted(unknown)}; expected {sorted(names)}")
    return cls(**d)


class NpmPackError(P2PError, RuntimeError):
    """``npm pack`` could not deliver the pinned package: npm missing, a failed fetch, a bad hash."""


def sri_sha512(path: str | os.PathLike) -> str:
    """A file's Subresource-Integrity string, as npm's registry gives it: ``sha512-<base64>``."""
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def npm_tarball_name(package: str, version: str) -> str:
    """The file ``npm pack`` writes: "@lobehub/fluent-emoji-3d", "1.1.0" -> "lobehub-fluent-emoji-3d-1.1.0.tgz"."""
    return f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"


def npm_pack(package: str, version: str, integrity: str, dest: str | os.PathLike, *, npm: str = "npm",
             timeout: float = 600) -> Path:
    """``dest/<name>-<version>.tgz`` of ``package@version``, fetched once with ``npm pack``.

    A tarball already in ``dest`` is checked like a fresh one. One that does not match ``integrity``
    is never returned: a cached one is deleted (so the next call fetches it again), and both raise
    NpmPackError saying what to do. The tarball lands whole (fetched into a temporary folder, then
    moved), so a stopped fetch leaves nothing behind.
    """
    dest = Path(dest)
    tgz = dest / npm_tarball_name(package, version)
    if tgz.is_file():
        if sri_sha512(tgz) == integrity:
            return tgz
        tgz.unlink()
        raise NpmPackError(f"{tgz} does not match the published {package}@{version} (damaged download?); "
                           "it was deleted: run again to fetch it anew")
    if shutil.which(npm) is None:
        raise NpmPackError(f"npm is not installed: cannot fetch {package}@{version}; "
                           "install Node.js and npm (Debian: apt-get install npm)")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        try:
            done = subprocess.run([npm, "pack", f"{package}@{version}", "--silent"], cwd=tmp, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise NpmPackError(f"npm pack {package}@{version} took over {timeout:.0f} s") from None
        got = Path(tmp) / tgz.name
        if done.returncode != 0 or not got.is_file():
            raise NpmPackError(f"npm pack {package}@{version} failed: {(done.stderr or done.stdout).strip()[-300:]}")
        digest = sri_sha512(got)
        if digest != integrity:
            raise NpmPackError(f"{got.name} does not match the pinned integrity ({digest[:24]}... != "
                               f"{integrity[:24]}...); refusing to use it")
        os.replace(got, tgz)
    return tgz
