"""A ``train fit`` checkpoint: one dict that resumes everything, written atomically, read with
``torch.load(weights_only=True)``; the RNG states it carries; the generator it stands for.

``last.pt`` holds G, D, optimisers, schedulers, grad scalers, step, config, loss history and every
rank's RNG states (plain tensors and lists, which ``weights_only`` accepts).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from p2p_demo.errors import P2PError
from p2p_demo.files import atomic_write
from p2p_demo.nets import GeneratorConfig, build_generator

CHECKPOINT_VERSION = 1
SUFFIXES = (".pt", ".pth", ".ckpt")


class CheckpointError(P2PError, OSError):
    """A checkpoint could not be written; the previous one is untouched."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically and durably (p2p_demo.files.atomic_write).

    A crash or kill at any moment leaves either the old or the new file at ``path``, never a
    partial one. A failed write (disk full, quota, I/O error) raises CheckpointError and leaves the
    old file as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left behind by a killed writer
        stale.unlink(missing_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(state, f)

    try:
        atomic_write(path, write, durable=True)
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)
        err = CheckpointError(f"could not write checkpoint {path} ({why}); the previous checkpoint there is untouched")
        err.errno = e.errno
        raise err from e


def load_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def is_train_checkpoint(ckpt: Any) -> bool:
    """Whether a loaded object is a ``train fit`` checkpoint (it says which generator it holds)."""
    return isinstance(ckpt, dict) and "generator_config" in ckpt and "G" in ckpt


def read_train_checkpoint(path: str | os.PathLike) -> dict[str, Any] | None:
    """The checkpoint dict when ``path`` is a file written by ``train fit``, else None (e.g. a
    model folder, or a pickled reference .pth: the hub loader judges those)."""
    path = Path(path)
    if not (path.is_file() and path.suffix in SUFFIXES):
        return None
    try:
        ckpt = load_checkpoint(path)
    except Exception:  # not ours
        return None
    return ckpt if is_train_checkpoint(ckpt) else None


def checkpoint_weights(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The generator weights a checkpoint stands for: the EMA when the run kept one (what export
    writes and evaluate judges), else the raw weights."""
    return ckpt.get("G_ema") or ckpt["G"]


def checkpoint_generator(ckpt: dict[str, Any]) -> nn.Module:
    """The generator a checkpoint stands for (see ``checkpoint_weights``), loaded strictly."""
    G = build_generator(GeneratorConfig.from_dict(ckpt["generator_config"]))
    G.load_state_dict(checkpoint_weights(ckpt))
    return G


# --------------------------------------------------------------------------------------------
# RNG states as plain tensors / lists (what torch.load(weights_only=True) accepts)


def rng_state(jitter: torch.Generator) -> dict[str, Any]:
    version, mt, gauss = random.getstate()
    key, np_mt, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"key": key, "state": torch.from_numpy(np_mt.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "jitter": jitter.get_state(),
    }


def set_rng_state(state: dict[str, Any], jitter: torch.Generator) -> None:
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    jitter.set_state(state["jitter"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
