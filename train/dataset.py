"""A prepared dataset: its on-disk format (the one reader), and the pairs held in memory as uint8
tensors, sharded, batched and jittered on the device.

On disk (written by ``python -m train prepare``, docs/CONTRACTS.md): a folder with
``manifest.json`` and one ``<split>.npz`` per split holding ``A`` (N, S, S) uint8 edge maps, ``B``
(N, S, S, C) uint8 targets, ``names``, ``groups``, ``annotations`` and ``subgroups`` (N,) str. The
manifest is written last, so a folder with one is complete.

Pairs stay uint8 on the device (4 bytes per pixel pair for RGB), so a whole prepared dataset fits
in GPU memory and no loader processes are needed; augmentation runs on the batch on the device.

Data order is torch's DistributedSampler (shuffle, drop_last=False): every epoch is a fresh
permutation from a generator seeded with ``seed + epoch``, padded to a multiple of the world size
and dealt out round-robin, a pure function of (seed, epoch, rank, world size). A resumed run
therefore only needs the step number to continue with the same batches.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from p2p_demo.errors import P2PError

FORMAT = "p2p_demo.prepared"
FORMAT_VERSION = 1
REFERENCE_SIZE, REFERENCE_LOAD = 256, 286


class NotPrepared(P2PError, ValueError):
    """A folder that is not (or not completely) a prepared dataset."""


def load_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a prepared dataset folder, or NotPrepared saying what is wrong."""
    path = Path(path)
    hint = f"make one with `python -m train prepare openmoji --out {path}`"
    if not path.is_dir():
        raise NotPrepared(f"{path}: no such folder; {hint}")
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise NotPrepared(f"{path} is not a prepared dataset (no manifest.json; an interrupted run?); {hint}")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise NotPrepared(f"{mpath} is unreadable ({e}); prepare the dataset again") from e
    if manifest.get("format") != FORMAT:
        raise NotPrepared(f"{mpath} is not a {FORMAT} manifest; prepare the dataset again")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise NotPrepared(f"{mpath} has format version {manifest['format_version']}; this code reads up to "
                          f"{FORMAT_VERSION}: update the code")
    return manifest


def load_prepared(path: str | os.PathLike, split: str) -> dict[str, np.ndarray]:
    """One split of a prepared dataset as arrays.

    {"A": (N, S, S) uint8 edge maps, "B": (N, S, S, C) uint8 targets, "names", "groups",
    "annotations", "subgroups": (N,) str}. Raises NotPrepared (a ValueError) with what to do when
    the folder is not a complete prepared dataset, ValueError for a split it does not have.
    """
    manifest = load_manifest(path)
    available = list(manifest.get("counts", {}))
    if split not in available:
        raise ValueError(f"{path} has no split {split!r}; it has {', '.join(available) or 'none'}")
    npz = Path(path) / f"{split}.npz"
    if not npz.is_file():
        raise NotPrepared(f"{npz} is missing; prepare the dataset again")
    try:
        with np.load(npz, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as e:
        raise NotPrepared(f"{npz} is unreadable ({e}); prepare the dataset again") from e
    a, b = data.get("A"), data.get("B")
    if a is None or b is None or a.ndim != 3 or b.ndim != 4 or a.shape != b.shape[:3] or a.dtype != np.uint8:
        raise NotPrepared(f"{npz}: A/B arrays missing or not (N,S,S) / (N,S,S,C) uint8; prepare the dataset again")
    n = len(a)
    for k in ("annotations", "subgroups"):
        data.setdefault(k, np.array([""] * n, dtype=str))
    for k in ("names", "groups", "annotations", "subgroups"):
        if k not in data or len(data[k]) != n:
            raise NotPrepared(f"{npz}: {k!r} missing or not {n} long; prepare the dataset again")
    if n != manifest["counts"][split]:
        raise NotPrepared(f"{npz} holds {n} pairs, its manifest says {manifest['counts'][split]}; prepare it again")
    return data


def split_size(manifest: dict[str, Any], split: str) -> int:
    return int(manifest.get("counts", {}).get(split, 0))


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float in [-1, 1], the same mapping as p2p_demo.image.to_tensor, for whole batches
    already on the device (to_tensor takes one numpy image)."""
    return x.float().div_(127.5).sub_(1.0)


@dataclass
class PairedData:
    """A: (N, S, S) uint8 edge maps, B: (N, C, S, S) uint8 targets, both on ``device``."""

    A: torch.Tensor
    B: torch.Tensor
    names: list[str] = field(default_factory=list)

    @classmethod
    def from_arrays(cls, A: np.ndarray, B: np.ndarray, names: Any = (), device: str | torch.device = "cpu") -> "PairedData":
        if A.ndim != 3 or A.dtype != np.uint8:
            raise ValueError(f"A must be (N, S, S) uint8, got {A.shape} {A.dtype}")
        if B.ndim == 3:  # grayscale stored without a channel axis
            B = B[..., None]
        if B.ndim != 4 or B.dtype != np.uint8 or B.shape[:3] != A.shape:
            raise ValueError(f"B must be (N, S, S, C) uint8 matching A {A.shape}, got {B.shape} {B.dtype}")
        if A.shape[1] != A.shape[2]:
            raise ValueError(f"pairs must be square, got {A.shape[1]}x{A.shape[2]}")
        a = torch.from_numpy(np.ascontiguousarray(A)).to(device)
        b = torch.from_numpy(np.ascontiguousarray(B)).permute(0, 3, 1, 2).contiguous().to(device)
        return cls(a, b, [str(n) for n in names])

    @classmethod
    def load(cls, folder: str | Path, split: str, device: str | torch.device = "cpu") -> "PairedData":
        d = load_prepared(folder, split)
        return cls.from_arrays(d["A"], d["B"], d.get("names", ()), device)

    def __len__(self) -> int:
        return self.A.shape[0]

    @property
    def size(self) -> int:
        return self.A.shape[-1]

    @property
    def channels(self) -> int:
        return self.B.shape[1]

    def pairs(self, index: torch.Tensor, in_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b) float in [-1, 1]: a (n, in_channels, S, S) with the edge map repeated, b (n, C, S, S)."""
        index = index.to(self.A.device)
        a = to_signed(self.A[index]).unsqueeze(1).expand(-1, in_channels, -1, -1)
        return a, to_signed(self.B[index])


def epoch_order(n: int, epoch: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """This rank's sample indices for an epoch: torch's DistributedSampler (shuffle, drop_last=False)."""
    return _epoch_order(n, epoch, seed, rank, world).clone()


@functools.lru_cache(maxsize=2)  # one epoch's order serves all its steps (a list of n ints: ~4 ms at n = 18,000)
def _epoch_order(n: int, epoch: int, seed: int, rank: int, world: int) -> torch.Tensor:
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.int64)


def steps_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    return math.ceil(math.ceil(n / world) / batch_size)


def batch_indices(n: int, step: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Indices of the batch this rank trains on at global step ``step`` (0-based).

    A function of the step rather than a DataLoader over the sampler: a resumed run starts in the
    middle of an epoch from the step number alone (a DataLoader's position is not part of any
    checkpoint), and the pairs are already on the device, so there is nothing to load in workers.
    """
    spe = steps_per_epoch(n, batch_size, world)
    epoch, pos = divmod(step, spe)
    return _epoch_order(n, epoch, seed, rank, world)[pos * batch_size : (pos + 1) * batch_size].clone()


def default_load_size(size: int) -> int:
    """286 for 256, scaled proportionally for other sizes (72 for 64, 36 for 32)."""
    return int(round(size * REFERENCE_LOAD / REFERENCE_SIZE))


class Jitter:
    """The reference's augmentation on a batch: resize S -> load_size (bicubic), random crop back
    to S, random horizontal flip; the same parameters for the input and the target of a pair.

    Random numbers come from the CPU generator passed in (saved in checkpoints), so augmentation
    does not depend on the device and a resumed run draws the same crops.
    """

    def __init__(self, size: int, *, jitter: bool = True, load_size: int = 0, flip: bool = True) -> None:
        self.size = size
        self.load_size = (load_size or default_load_size(size)) if jitter else size
        if self.load_size < size:
            raise ValueError(f"load_size {self.load_size} is smaller than the image size {size}")
        self.flip = flip

    @property
    def active(self) -> bool:
        return self.load_size != self.size or self.flip

    def __call__(self, a: torch.Tensor, b: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.active:
            return a, b
        n, ca = a.shape[:2]
        s, load = self.size, self.load_size
        x = torch.cat([a, b], 1)  # (n, Ca + C, S, S) in [-1, 1]: one transform for both
        if load != s:
            x = F.interpolate(x, size=(load, load), mode="bicubic", align_corners=False).clamp_(-1, 1)
        top = torch.randint(0, load - s + 1, (n,), generator=generator)
        left = torch.randint(0, load - s + 1, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        ar = torch.arange(s)
        rows = top[:, None] + ar  # (n, S)
        cols = torch.where(flip[:, None], left[:, None] + s - 1 - ar, left[:, None] + ar)  # (n, S)
        dev = x.device
        rows, cols = rows.to(dev), cols.to(dev)
        # one gather does crop and flip: x[i, :, rows[i], cols[i]] for every i
        x = x[torch.arange(n, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (n, S, S, ch)
        x = x.permute(0, 3, 1, 2).contiguous()
        return x[:, :ca], x[:, ca:]


def pick_examples(annotations: Sequence[str], patterns: Sequence[str], limit: int) -> list[int]:
    """Indices for a figure: the first item matching each regex pattern (in the patterns' order),
    then items spread evenly over the split until there are ``limit``."""
    import re

    chosen: list[int] = []
    for pattern in patterns:
        hit = next((i for i, a in enumerate(annotations) if re.search(pattern, a) and i not in chosen), None)
        if hit is not None:
            chosen.append(hit)
    for i in range(0, len(annotations), max(1, len(annotations) // limit)):  # never short
        if len(chosen) >= limit:
            break
        if i not in chosen:
            chosen.append(i)
    return chosen[:limit]
