"""Writing a prepared dataset: what every source in train/sources/ shares.

Pairs are collected (``Collector``), then written as ``<split>.npz`` files and ``manifest.json``
last (the format and its reader are in train.dataset). Splits are a deterministic function of a
name alone, so they never change between runs or machines. Edge maps are made with the canonical
line style of ``p2p_demo.edges``; work runs in worker processes (``imap``), and photo sources save
it in chunks (``imap_resumable``) keyed by ``pipeline_fingerprint``, so a stopped run goes on
where it stopped.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import multiprocessing as mp
import os
import shlex
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from p2p_demo import edges
from p2p_demo.errors import P2PError
from p2p_demo.files import IMAGE_SUFFIXES, NpmPackError, atomic_write, npm_pack, npm_tarball_name, sri_sha512
from p2p_demo.image import ImageError, load_image, to_gray
from train.dataset import FORMAT, FORMAT_VERSION

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


class PrepareError(P2PError):
    """A problem with the whole run (missing input, bad option): reported on one line, exit 1."""


# ----------------------------------------------------------------------------------------------
# Splits: deterministic, from a name alone, so they never change between runs or machines.


def sha1_hex(name: str) -> str:
    return hashlib.sha1(name.encode("utf-8")).hexdigest()


def hash_split(name: str, test_fraction: float) -> str:
    """Test when sha1(name), read as a fraction of 2**32 from its first 8 hex digits, < test_fraction.

    With test_fraction = 0.125 this is exactly ``sources.openmoji.openmoji_split``.
    """
    return "test" if int(sha1_hex(name)[:8], 16) < test_fraction * 2**32 else "train"


def cache_dir() -> Path:
    """Where downloaded source data is kept: ``$P2P_CACHE`` or ``~/.cache/p2p_demo``."""
    return Path(os.environ.get("P2P_CACHE") or Path.home() / ".cache" / "p2p_demo")


def npm_source(given: str | os.PathLike | None, package: str, version: str, integrity: str) -> Path:
    """A data source's package: the ``--package`` the user gave, or the pinned npm tarball fetched once
    into the cache (``files.npm_pack``, which checks it). A given file named like the published tarball
    must be it: a damaged or different one is refused before a pair is made from it; other names (a
    repacked archive, an unpacked folder) are read as they are."""
    if given:
        path = Path(given)
        if path.is_file() and path.name == npm_tarball_name(package, version) and sri_sha512(path) != integrity:
            raise PrepareError(f"{path} does not match the published {package}@{version} tarball (a damaged or "
                               "different download); download it again, or leave out --package to have it fetched")
        return path
    try:
        return npm_pack(package, version, integrity, cache_dir())
    except NpmPackError as e:
        raise PrepareError(f"{e}; or pass --package PATH to a downloaded {npm_tarball_name(package, version)} "
                           "or its unpacked folder") from None


def default_line_style(size: int, stroke_width: int | None = None, margin: float | None = None) -> edges.LineStyle:
    """The canonical line style at ``size`` (stroke 3 px at 256, scaled with the side) unless overridden."""
    style = edges.LineStyle.for_size(size)
    if stroke_width is not None:
        style = replace(style, stroke_width=stroke_width)
    if margin is not None:
        style = replace(style, margin=margin)
    return style


# ----------------------------------------------------------------------------------------------
# Collecting pairs and writing a prepared folder (train.dataset reads it).


@dataclass
class Pair:
    name: str
    split: str
    group: str
    annotation: str
    a: np.ndarray  # (S, S) uint8 edge map, black lines on white
    b: np.ndarray  # (S, S, C) uint8 target
    subgroups: str = ""  # finer tags, comma-separated (OpenMoji's subgroups, e.g. "clothing")


@dataclass
class Collector:
    size: int
    channels: int
    pairs: dict[str, list[Pair]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    skipped: list[dict[str, str]] = field(default_factory=list)
    excluded: dict[str, list[str]] = field(default_factory=dict)
    duplicates: dict[str, str] = field(default_factory=dict)  # name dropped -> name kept

    def add(self, pair: Pair) -> None:
        if pair.b.ndim == 2:
            pair.b = pair.b[..., None]
        expect_a, expect_b = (self.size, self.size), (self.size, self.size, self.channels)
        if pair.a.shape != expect_a or pair.b.shape != expect_b or pair.a.dtype != np.uint8 or pair.b.dtype != np.uint8:
            raise ValueError(f"{pair.name}: got A {pair.a.shape} {pair.a.dtype}, B {pair.b.shape} {pair.b.dtype}; "
                                 f"expected uint8 {expect_a} and {expect_b}")
        self.pairs[pair.split].append(pair)

    def skip(self, name: str, reason: str) -> None:
        log.warning("skipped %s: %s", name, reason)
        self.skipped.append({"name": name, "reason": reason})

    def exclude(self, reason: str, name: str) -> None:
        self.excluded.setdefault(reason, []).append(name)

    def write(self, out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
        """Write <split>.npz files, then manifest.json last: a folder with a manifest is complete."""
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").unlink(missing_ok=True)
        splits = {}
        for split in SPLITS:
            pairs = sorted(self.pairs[split], key=lambda p: p.name)
            s, c = self.size, self.channels
            arrays = {
                "A": np.stack([p.a for p in pairs]) if pairs else np.zeros((0, s, s), np.uint8),
                "B": np.stack([p.b for p in pairs]) if pairs else np.zeros((0, s, s, c), np.uint8),
                "names": np.array([p.name for p in pairs], dtype=str),
                "groups": np.array([p.group for p in pairs], dtype=str),
                "annotations": np.array([p.annotation for p in pairs], dtype=str),
                "subgroups": np.array([p.subgroups for p in pairs], dtype=str),
            }
            atomic_write(out / f"{split}.npz", lambda p: np.savez_compressed(p, **arrays))
            splits[split] = {"count": len(pairs), "groups": dict(sorted(Counter(p.group for p in pairs).items()))}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **manifest,
            "size": self.size,
            "channels": self.channels,
            "counts": {s: splits[s]["count"] for s in SPLITS},
            "splits": splits,
            "excluded": {k: {"count": len(v), "names": sorted(v)} for k, v in sorted(self.excluded.items())},
            "skipped": sorted(self.skipped, key=lambda d: d["name"]),
        }
        if self.duplicates:
            manifest["duplicates"] = dict(sorted(self.duplicates.items()))
        text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
        atomic_write(out / "manifest.json", lambda p: p.write_text(text, encoding="utf-8"))
        shutil.rmtree(out / ".partial", ignore_errors=True)  # resumable work of this run, now written
        return manifest


# ----------------------------------------------------------------------------------------------
# Parallel work, the manifest's common part, and what the photo sources share.


def progress(it: Iterable, total: int | None, desc: str) -> Iterator:
    from tqdm import tqdm

    # Not a terminal (a log file): a line every 30 s instead of a redraw every 0.1 s.
    return iter(tqdm(it, total=total, desc=desc, unit="img", mininterval=0.5 if sys.stderr.isatty() else 30))


def imap(fn: Callable, jobs: Sequence, workers: int, desc: str) -> Iterator:
    """fn over jobs in order, in ``workers`` processes (1: in this process)."""
    if workers <= 1 or len(jobs) < 8:
        yield from progress(map(fn, jobs), len(jobs), desc)
        return
    with mp.get_context().Pool(workers, initializer=_worker_init) as pool:
        yield from progress(pool.imap(fn, jobs, chunksize=8), len(jobs), desc)


def pipeline_fingerprint(**options: Any) -> str:
    """A digest of the edge pipeline's code and weights and the options: cached work is reused
    only when all of them are unchanged."""
    h = hashlib.sha1(json.dumps(options, sort_keys=True, default=str).encode())
    for f in (*sorted(Path(edges.__file__).parent.glob("*.py")), edges.HED_WEIGHTS):
        if Path(f).is_file():
            h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


def imap_resumable(fn: Callable, jobs: Sequence, workers: int, desc: str, cache: Path,
                    chunk: int = 500) -> Iterator[tuple[str, np.ndarray | None, np.ndarray | None, str | None]]:
    """``imap`` for (name, A, B, error) workers, saving every ``chunk`` results under ``cache``.

    A run that is stopped (Ctrl-C, a session that ends, a crash) loses at most one chunk: run the
    same command again and the saved chunks are read back instead of computed. Results come in
    chunk order, cached chunks first.
    """
    cache.mkdir(parents=True, exist_ok=True)
    chunks = [list(jobs[i : i + chunk]) for i in range(0, len(jobs), chunk)]
    todo = []
    for k, ch in enumerate(chunks):
        f = cache / f"{k:05d}.npz"
        try:
            with np.load(f, allow_pickle=False) as z:
                if list(z["names"]) == [j[0] for j in ch]:
                    for name, a, b, err in zip(z["names"], z["A"], z["B"], z["errors"]):
                        yield str(name), (None if err else a), (None if err else b), (str(err) or None)
                    continue
        except (OSError, ValueError, KeyError, EOFError):
            pass  # missing or damaged chunk: compute it
        todo.append(k)
    if todo:
        log.info("%s: %d of %d chunks cached in %s", desc, len(chunks) - len(todo), len(chunks), cache)
    results = imap(fn, [j for k in todo for j in chunks[k]], workers, desc)
    for k in todo:
        got = [next(results) for _ in chunks[k]]
        good = next((g for g in got if g[3] is None), None)
        blank_a = np.zeros_like(good[1]) if good else np.zeros((1, 1), np.uint8)  # stands in for failures
        blank_b = np.zeros_like(good[2]) if good else np.zeros((1, 1), np.uint8)
        atomic_write(cache / f"{k:05d}.npz", lambda p: np.savez(
            p, names=np.array([g[0] for g in got], dtype=str), errors=np.array([g[3] or "" for g in got], dtype=str),
            A=np.stack([blank_a if g[3] else g[1] for g in got]), B=np.stack([blank_b if g[3] else g[2] for g in got])))
        yield from got


def _worker_init() -> None:
    try:  # one thread per worker: the workers are the parallelism
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    import cv2

    cv2.setNumThreads(1)


def common_manifest(args: argparse.Namespace, argv: Sequence[str], style: edges.LineStyle | None) -> dict[str, Any]:
    return {
        "line_style": style.to_dict() if style is not None else None,
        "command": "python -m train prepare " + shlex.join(argv),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def folder_manifest(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The manifest's part for a user's own folder (``--input``, ``--licence``, ``--attribution``)."""
    return {"input_folder": str(root.resolve()), "licence": args.licence, "attribution": args.attribution,
            "input": "edges"}


def photo_pair(job: tuple) -> tuple[str, np.ndarray | None, np.ndarray | None, str | None]:
    """Worker: a photo (array or path) -> (name, edge map, target framed with the same box, error)."""
    name, source, method, style_dict, gray = job
    style = edges.LineStyle.from_dict(style_dict)
    try:
        photo = source if isinstance(source, np.ndarray) else load_image(source)
    except ImageError as e:
        return name, None, None, str(e)
    try:
        emap = edges.photo_to_edges(photo, method=method, style=style)
    except edges.NothingDrawn as e:
        return name, None, None, f"no edges found ({e})"
    target = edges.apply_box(photo, emap.box, style.size)
    return name, emap.image, (to_gray(target) if gray else target), None


def image_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise PrepareError(f"{root}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise PrepareError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def group_of(rel: Path) -> str:
    return rel.parent.as_posix() if rel.parent != Path(".") else ""
