"""Small file helpers shared by the library, the app and training.

* :func:`atomic_write`: the one way this project writes a file that someone may read while it is
  being written (model folders, ONNX exports, checkpoints, prepared data, the app's image cache).
* :data:`IMAGE_SUFFIXES`: the image files the app and the data tools pick up from a folder.
* :func:`strict_from_dict`: a dataclass from a dict that fails on an unknown key.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, TypeVar

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
