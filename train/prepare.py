"""Prepare paired training data: (edge map A, target B) arrays in a folder the trainer reads.

    python -m train prepare openmoji      --out data/openmoji-256 [--size 256]
    python -m train prepare fashion-mnist --out data/fmnist-64    [--size 64] [--limit N]
    python -m train prepare folder        --out data/my-photos --input DIR [--edges hed|canny]
    python -m train prepare aligned       --out data/edges2x   --input DIR [--direction AtoB|BtoA]

A prepared dataset is a folder with ``manifest.json`` (source, licence, line style, counts,
skipped files and why, the command line) and one ``<split>.npz`` per split (``train``, ``test``)
holding ``A`` (N, S, S) uint8 edge maps (black lines on white), ``B`` (N, S, S, C) uint8 targets,
``names``, ``groups``, ``annotations`` and ``subgroups`` (N,) str. ``load_prepared`` is the one reader.

Every edge map is made by ``p2p_demo.edges``, the pipeline the app runs on users' input, so what
a model sees in training is what it sees when served. Line art and targets are framed with the
SAME square box (``apply_box``), so each pair stays pixel-aligned.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import hashlib
import json
import logging
import multiprocessing as mp
import os
import shlex
import shutil
import struct
import subprocess
import sys
import tarfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from p2p_demo import edges
from p2p_demo.files import IMAGE_SUFFIXES, atomic_write
from p2p_demo.image import ImageError, load_image, resize, to_gray

log = logging.getLogger(__name__)

FORMAT = "p2p_demo.prepared"
FORMAT_VERSION = 1
SPLITS = ("train", "test")

OPENMOJI_VERSION = "17.0.0"
# sha512 of the npm tarball of openmoji@17.0.0: a cached or given archive is checked against it.
OPENMOJI_SHA512 = (
    "1019d8acd19d71dc3e3925e610d78d135c81351bbab4eada4e6a0ec946c99139"
    "af4fff97113a7c4592d2245cc3de5acf73937d0b3b323e7453934569e14688f7"
)
# Groups or subgroups whose line art is no drawing: a flag's line art is an empty rectangle, a
# skin-tone swatch's an empty square. Matched against both `group` and `subgroups`.
OPENMOJI_DEFAULT_EXCLUDE = ("flags", "subdivision-flag", "skin-tone")
DUPLICATE = "same line art as an earlier drawing (skin-tone or colour variant)"
OPENMOJI_ATTRIBUTION = (
    "All emojis designed by OpenMoji - the open-source emoji and icon project. "
    "License: CC BY-SA 4.0 (https://openmoji.org)"
)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# Footwear classes of Fashion-MNIST, label -> group name.
FASHION_MNIST_FOOTWEAR = {5: "sandal", 7: "sneaker", 9: "ankle-boot"}
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class NotPrepared(ValueError):
    """A folder that is not (or not completely) a prepared dataset."""


class PrepareError(Exception):
    """A problem with the whole run (missing input, bad option): reported on one line, exit 1."""


# ----------------------------------------------------------------------------------------------
# Splits: deterministic, from a name alone, so they never change between runs or machines.


def sha1_hex(name: str) -> str:
    return hashlib.sha1(name.encode("utf-8")).hexdigest()


def openmoji_split(stem: str) -> str:
    """The project's fixed held-out rule (shared/DATA.md): sha1(stem)'s first hex digit 0 or 1 -> test.

    ``stem`` is the SVG's file name without ``.svg`` exactly as OpenMoji spells it, e.g. "1F408"
    or "1F468-200D-1F469-200D-1F466".
    """
    return "test" if sha1_hex(stem)[0] in "01" else "train"


def hash_split(name: str, test_fraction: float) -> str:
    """Test when sha1(name), read as a fraction of 2**32 from its first 8 hex digits, < test_fraction.

    With test_fraction = 0.125 this is exactly ``openmoji_split``.
    """
    return "test" if int(sha1_hex(name)[:8], 16) < test_fraction * 2**32 else "train"


def default_line_style(size: int, stroke_width: int | None = None, margin: float | None = None) -> edges.LineStyle:
    """The canonical line style at ``size`` (stroke 3 px at 256, scaled with the side) unless overridden."""
    style = edges.LineStyle.for_size(size)
    if stroke_width is not None:
        style = replace(style, stroke_width=stroke_width)
    if margin is not None:
        style = replace(style, margin=margin)
    return style


# ----------------------------------------------------------------------------------------------
# Collecting pairs and writing / reading a prepared folder.


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


# ----------------------------------------------------------------------------------------------
# Shared helpers.


def _progress(it: Iterable, total: int | None, desc: str) -> Iterator:
    from tqdm import tqdm

    # Not a terminal (a log file): a line every 30 s instead of a redraw every 0.1 s.
    return iter(tqdm(it, total=total, desc=desc, unit="img", mininterval=0.5 if sys.stderr.isatty() else 30))


def _imap(fn: Callable, jobs: Sequence, workers: int, desc: str) -> Iterator:
    """fn over jobs in order, in ``workers`` processes (1: in this process)."""
    if workers <= 1 or len(jobs) < 8:
        yield from _progress(map(fn, jobs), len(jobs), desc)
        return
    with mp.get_context().Pool(workers, initializer=_worker_init) as pool:
        yield from _progress(pool.imap(fn, jobs, chunksize=8), len(jobs), desc)


def pipeline_fingerprint(**options: Any) -> str:
    """A digest of the edge pipeline's code and weights and the options: cached work is reused
    only when all of them are unchanged."""
    h = hashlib.sha1(json.dumps(options, sort_keys=True, default=str).encode())
    for f in (Path(edges.__file__), Path(edges.__file__).with_name("hed.py"), getattr(edges, "HED_WEIGHTS", None)):
        if f is not None and Path(f).is_file():
            h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


def _imap_resumable(fn: Callable, jobs: Sequence, workers: int, desc: str, cache: Path,
                    chunk: int = 500) -> Iterator[tuple[str, np.ndarray | None, np.ndarray | None, str | None]]:
    """``_imap`` for (name, A, B, error) workers, saving every ``chunk`` results under ``cache``.

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
    results = _imap(fn, [j for k in todo for j in chunks[k]], workers, desc)
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


def _common_manifest(args: argparse.Namespace, argv: Sequence[str], style: edges.LineStyle | None) -> dict[str, Any]:
    return {
        "line_style": style.to_dict() if style is not None else None,
        "command": "python -m train prepare " + shlex.join(argv),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# ----------------------------------------------------------------------------------------------
# OpenMoji: paired line art (black/svg) and colour (color/svg) drawings.


def cache_dir() -> Path:
    return Path(os.environ.get("P2P_CACHE") or Path.home() / ".cache" / "p2p_demo")


def _sha512(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_openmoji(dest: Path | None = None) -> Path:
    """The openmoji@17.0.0 npm tarball, from the cache or fetched once with ``npm pack``."""
    dest = dest or cache_dir()
    tgz = dest / f"openmoji-{OPENMOJI_VERSION}.tgz"
    if tgz.is_file():
        return tgz
    npm = shutil.which("npm")
    if npm is None:
        raise PrepareError("npm is not installed: install Node.js/npm (apt-get install npm) or pass "
                           "--package PATH to a downloaded openmoji-17.0.0.tgz or its unpacked folder")
    dest.mkdir(parents=True, exist_ok=True)
    log.info("fetching openmoji@%s with npm pack into %s", OPENMOJI_VERSION, dest)
    r = subprocess.run([npm, "pack", f"openmoji@{OPENMOJI_VERSION}", "--pack-destination", str(dest)],
                       capture_output=True, text=True)
    if r.returncode != 0 or not tgz.is_file():
        raise PrepareError(f"npm pack openmoji@{OPENMOJI_VERSION} failed: {(r.stderr or r.stdout).strip()[-500:]}")
    return tgz


def read_openmoji_package(package: Path) -> tuple[list[dict], dict[str, bytes], dict[str, bytes]]:
    """(openmoji.json entries, {stem: black svg}, {stem: colour svg}) from a .tgz or a folder.

    A folder is the package root (holding black/, color/, data/) or the folder npm unpacks into
    (holding package/). The tarball is read in one pass into memory (~30 MB of SVG text).
    """
    meta: bytes | None = None
    black: dict[str, bytes] = {}
    color: dict[str, bytes] = {}

    def take(rel: str, data: Callable[[], bytes]) -> None:
        nonlocal meta
        parts = rel.split("/")
        if parts[:2] == ["data", "openmoji.json"]:
            meta = data()
        elif len(parts) == 3 and parts[1] == "svg" and parts[2].endswith(".svg") and parts[0] in ("black", "color"):
            (black if parts[0] == "black" else color)[parts[2][: -len(".svg")]] = data()

    if package.is_file():
        if package.name == f"openmoji-{OPENMOJI_VERSION}.tgz" and _sha512(package) != OPENMOJI_SHA512:
            raise PrepareError(f"{package} does not match the published openmoji@{OPENMOJI_VERSION} tarball "
                               "(damaged download?); delete it and run again")
        try:
            with tarfile.open(package, "r:*") as tar:
                for m in tar:
                    if m.isfile():
                        rel = m.name.split("/", 1)[1] if m.name.startswith("package/") else m.name
                        take(rel, lambda m=m: tar.extractfile(m).read())
        except (tarfile.TarError, OSError, EOFError) as e:
            raise PrepareError(f"{package}: not a readable .tgz ({e})") from e
    elif package.is_dir():
        root = package / "package" if (package / "package" / "data").is_dir() else package
        for sub in ("black/svg", "color/svg"):
            for p in (root / sub).glob("*.svg") if (root / sub).is_dir() else []:
                take(f"{sub}/{p.name}", p.read_bytes)
        if (root / "data" / "openmoji.json").is_file():
            take("data/openmoji.json", (root / "data" / "openmoji.json").read_bytes)
    else:
        raise PrepareError(f"{package}: no such file or folder")
    if meta is None:
        raise PrepareError(f"{package}: no data/openmoji.json inside; is it the openmoji npm package?")
    try:
        entries = json.loads(meta)
    except ValueError as e:
        raise PrepareError(f"{package}: data/openmoji.json is not valid JSON ({e})") from e
    return entries, black, color


def render_svg(data: bytes, side: int) -> np.ndarray:
    """An SVG rendered at side x side onto white paper -> (side, side, 3) uint8."""
    import cairosvg

    png = cairosvg.svg2png(bytestring=data, output_width=side, output_height=side, background_color="white")
    return load_image(png)


def line_art_key(black_svg: bytes) -> str:
    """What a line drawing looks like, independent of --size: its ink at 128 px, hashed.

    Different SVGs that draw the same lines (a hair colour, a moon and a black circle) get the
    same key, so the kept set, and the test split, are the same at every output size.
    """
    ink = to_gray(render_svg(black_svg, 128)) < 128
    return hashlib.sha1(np.packbits(ink).tobytes()).hexdigest()


def _openmoji_pair(job: tuple) -> tuple[str, np.ndarray | None, np.ndarray | None, str | None, str | None]:
    """Worker: render one line-art/colour pair and frame both with the line art's box.

    Returns (stem, A, B, error, line-art key).
    """
    stem, black_svg, color_svg, render_side, style_dict = job
    style = edges.LineStyle.from_dict(style_dict)
    try:
        line = render_svg(black_svg, render_side)
        key = line_art_key(black_svg)
    except Exception as e:  # cairosvg raises many types on bad SVG; one bad file must not stop the run
        return stem, None, None, f"black/svg/{stem}.svg does not render: {type(e).__name__}: {e}", None
    try:
        colour = render_svg(color_svg, render_side)
    except Exception as e:
        return stem, None, None, f"color/svg/{stem}.svg does not render: {type(e).__name__}: {e}", None
    try:
        # Exactly what the app makes of this drawing if a user uploaded it as a sketch.
        emap = edges.normalize_sketch(line, style)
    except edges.NothingDrawn:
        return stem, None, None, "line art has no ink", None
    target = edges.apply_box(colour, emap.box, style.size)  # the SAME box: the pair stays aligned
    return stem, emap.image, target, None, key


def select_openmoji(entries: list[dict], black: dict[str, bytes], color: dict[str, bytes], *,
                    groups: Sequence[str] = (), exclude: Sequence[str] = OPENMOJI_DEFAULT_EXCLUDE,
                    keep_duplicates: bool = False, limit: int | None = None,
                    collector: Collector | None = None) -> list[dict]:
    """The openmoji.json entries to render, in the package's order; the rest recorded as excluded.

    Duplicate line art: every skin-tone variant's black SVG is byte-identical to its base emoji's,
    and so are e.g. the coloured hearts', circles' and squares'. Identical inputs with different
    targets teach the model to average colours, and (the split being by name) would put the same
    drawing in train and test. Only the first in OpenMoji's order (the base emoji, the red heart)
    is kept unless ``keep_duplicates``.
    """
    groups, exclude = set(groups), set(exclude)
    chosen: list[dict] = []
    seen: dict[str, str] = {}  # sha1 of line-art SVG -> stem kept
    note = collector.exclude if collector is not None else (lambda reason, name: None)
    for e in sorted(entries, key=lambda e: e.get("order") or 0):
        stem = e["hexcode"]
        tags = {e.get("group", ""), *[s.strip() for s in e.get("subgroups", "").split(",")]}
        if stem not in black or stem not in color:
            if collector is not None:
                missing = [k for k, d in (("black", black), ("color", color)) if stem not in d]
                collector.skip(stem, f"no {' or '.join(missing)}/svg/{stem}.svg in the package")
            continue
        if groups and not tags & groups:
            note("not in --groups", stem)
            continue
        hit = sorted(tags & exclude)
        if hit:
            note(f"excluded group {hit[0]} (line art is no drawing: an empty frame)" if hit[0] in OPENMOJI_DEFAULT_EXCLUDE
                 else f"excluded group {hit[0]} (--exclude-groups)", stem)
            continue
        if not keep_duplicates:
            key = hashlib.sha1(black[stem]).hexdigest()
            if key in seen:
                note(DUPLICATE, stem)
                if collector is not None:
                    collector.duplicates[stem] = seen[key]
                continue
            seen[key] = stem
        chosen.append(e)
    if limit is not None:
        for e in chosen[limit:]:
            note("beyond --limit", e["hexcode"])
        chosen = chosen[:limit]
    return chosen


def prepare_openmoji(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    style = default_line_style(args.size, args.stroke_width, args.margin)
    package = Path(args.package) if args.package else fetch_openmoji()
    entries, black, color = read_openmoji_package(package)
    col = Collector(args.size, 3)
    chosen = select_openmoji(entries, black, color, groups=_csv(args.groups), exclude=_csv(args.exclude_groups),
                             keep_duplicates=args.keep_duplicates, limit=args.limit, collector=col)
    by_stem = {e["hexcode"]: e for e in chosen}
    render_side = args.size * args.supersample
    jobs = [(e["hexcode"], black[e["hexcode"]], color[e["hexcode"]], render_side, style.to_dict()) for e in chosen]
    t0 = time.perf_counter()
    seen: dict[str, str] = {}  # line-art key -> stem kept: different SVGs can still draw the same lines
    for stem, a, b, err, key in _imap(_openmoji_pair, jobs, args.workers, "openmoji"):
        if err is not None:
            col.skip(stem, err)
            continue
        if key in seen and not args.keep_duplicates:
            col.exclude(DUPLICATE, stem)
            col.duplicates[stem] = seen[key]
            continue
        seen.setdefault(key, stem)
        e = by_stem[stem]
        col.add(Pair(stem, openmoji_split(stem), e.get("group", ""), e.get("annotation", ""), a, b,
                     e.get("subgroups", "")))
    seconds = time.perf_counter() - t0
    meta = {
        "source": "openmoji",
        "source_version": OPENMOJI_VERSION,
        "source_package": f"npm openmoji@{OPENMOJI_VERSION}",
        "licence": "CC-BY-SA-4.0",
        "attribution": OPENMOJI_ATTRIBUTION,
        "licence_note": "Models trained on this data are adaptations: share them alike (CC BY-SA 4.0) "
                        "and credit OpenMoji.",
        "input": "edges",
        "a": "black/svg line art rendered with cairosvg at size x supersample onto white, then "
             "p2p_demo.edges.normalize_sketch (canonical line style, framed by the ink's box)",
        "b": "color/svg rendered the same way, framed with the SAME box via edges.apply_box; RGB",
        "split_rule": "test when the first hex digit of sha1(file stem, utf-8) is 0 or 1, else train",
        "options": {"groups": _csv(args.groups), "exclude_groups": _csv(args.exclude_groups),
                    "keep_duplicates": args.keep_duplicates, "supersample": args.supersample, "limit": args.limit},
        "exclusion_notes": {
            "flags, subdivision-flag": "a flag's line art is an empty rectangle: nothing to learn from",
            "skin-tone": "the five skin-tone swatches (component) are empty squares",
            "duplicates": "skin-tone variants share their base emoji's line art byte for byte (2,030 of "
                          "4,495 drawings), as do colour variants (hearts, circles, squares, hair colours...): "
                          "only the first in OpenMoji's order is kept (same SVG, or same ink when rendered at 128 px, "
                          "whatever --size), so one "
                          "input has one target and no drawing is in both splits; `duplicates` maps each "
                          "dropped name to the one kept",
        },
        "timing_s": {"render": round(seconds, 1)},
        "annotations": "each pair's unicode annotation (e.g. 'cat', 'running shoe') is in the npz's "
                       "`annotations`; groups holds OpenMoji's group (e.g. animals-nature, objects)",
    }
    return col.write(Path(args.out), {**meta, **_common_manifest(args, argv, style)})


# ----------------------------------------------------------------------------------------------
# Photos -> edges (Fashion-MNIST and any folder of photos).


def _photo_pair(job: tuple) -> tuple[str, np.ndarray | None, np.ndarray | None, str | None]:
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


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (the MNIST format; .gz or raw): magic 0,0,type,ndim; big-endian int32 dims; data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX data type 0x{raw[2]:02x}")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=dtypes[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: holds {data.size} values, its header says {dims} (truncated file?)")
    return data.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    raise PrepareError(f"{folder}: no {stem}[.gz]; install Debian's dataset-fashion-mnist "
                       f"(apt-get install dataset-fashion-mnist) or pass --path to a folder holding it")


def prepare_fashion_mnist(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    folder = Path(args.path)
    style = default_line_style(args.size, args.stroke_width, args.margin)
    col = Collector(args.size, 1)
    classes = {int(k): v for k, v in FASHION_MNIST_FOOTWEAR.items()}
    timing: dict[str, float] = {}
    t_all = time.perf_counter()
    if args.edges == "hed":
        edges.load_hed()  # fail now, not after reading: missing HED weights stop the whole run
    for split, (img_name, lab_name) in FASHION_MNIST_FILES.items():
        images = read_idx(_find_idx(folder, img_name))
        labels = read_idx(_find_idx(folder, lab_name))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise PrepareError(f"{folder}: {img_name} {images.shape} and {lab_name} {labels.shape} do not match")
        index = np.flatnonzero(np.isin(labels, list(classes)))
        if args.limit is not None:
            index = index[: args.limit]
        # Fashion-MNIST stores negatives (object bright on black); invert -> a product photo on white.
        jobs = [(f"{split}-{int(i):05d}", resize(255 - images[i] if args.invert else images[i], args.size),
                 args.edges, style.to_dict(), True) for i in index]
        group = {f"{split}-{int(i):05d}": classes[int(labels[i])] for i in index}
        t0 = time.perf_counter()
        fingerprint = pipeline_fingerprint(source="fashion-mnist", style=style.to_dict(), edges=args.edges,
                                           invert=args.invert, limit=args.limit)
        cache = Path(args.out) / ".partial" / f"{split}-{fingerprint}"
        for name, a, b, err in _imap_resumable(_photo_pair, jobs, args.workers, f"fashion-mnist {split}", cache):
            if err is not None:
                col.skip(name, err)
                continue
            col.add(Pair(name, split, group[name], group[name].replace("-", " "), a, b))
        timing[f"edges_{split}"] = round(time.perf_counter() - t0, 1)
        timing[f"per_image_{split}_ms"] = round(1000 * timing[f"edges_{split}"] / max(1, len(index)), 2)
    timing["total"] = round(time.perf_counter() - t_all, 1)
    meta = {
        "source": "fashion-mnist",
        "source_package": "Debian dataset-fashion-mnist",
        "licence": "MIT",
        "attribution": "Fashion-MNIST, Zalando Research (Xiao, Rasul and Vollgraf, 2017), MIT licence",
        "input": "edges",
        "a": f"p2p_demo.edges.photo_to_edges(method={args.edges!r}) of the upscaled photo",
        "b": "the 28x28 photo, " + ("inverted back to dark-on-white, " if args.invert else "")
             + f"upscaled bicubic to {args.size}, framed with the edge map's box; grayscale (C=1)",
        "split_rule": "Fashion-MNIST's official train (60k file) / test (t10k file) split",
        "classes": {str(k): v for k, v in classes.items()},
        "options": {"edges": args.edges, "invert": args.invert, "limit": args.limit, "path": str(folder)},
        "timing_s": timing,
    }
    return col.write(Path(args.out), {**meta, **_common_manifest(args, argv, style)})


def _image_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise PrepareError(f"{root}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise PrepareError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def _group_of(rel: Path) -> str:
    return rel.parent.as_posix() if rel.parent != Path(".") else ""


def prepare_folder(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    root = Path(args.input)
    files = _image_files(root)
    style = default_line_style(args.size, args.stroke_width, args.margin)
    col = Collector(args.size, 3)
    if args.edges == "hed":
        edges.load_hed()  # missing HED weights stop the run here, not once per photo
    jobs = [(p.relative_to(root).as_posix(), str(p), args.edges, style.to_dict(), False) for p in files]
    t0 = time.perf_counter()
    cache = Path(args.out) / ".partial" / pipeline_fingerprint(source="folder", input=str(root.resolve()),
                                                               style=style.to_dict(), edges=args.edges)
    for name, a, b, err in _imap_resumable(_photo_pair, jobs, args.workers, "photos", cache):
        if err is not None:
            col.skip(name, err)
            continue
        rel = Path(name)
        col.add(Pair(name, hash_split(name, args.test_fraction), _group_of(rel), rel.stem, a, b))
    meta = {
        "source": "folder",
        "input_folder": str(root.resolve()),
        "licence": args.licence,
        "attribution": args.attribution,
        "input": "edges",
        "a": f"p2p_demo.edges.photo_to_edges(method={args.edges!r})",
        "b": "the photo framed with the edge map's box (edges.apply_box, white fill); RGB",
        "split_rule": f"test when sha1(relative path, utf-8)[:8] / 2**32 < {args.test_fraction}",
        "options": {"edges": args.edges, "test_fraction": args.test_fraction},
        "timing_s": {"edges": round(time.perf_counter() - t0, 1)},
    }
    return col.write(Path(args.out), {**meta, **_common_manifest(args, argv, style)})


def split_aligned(image: np.ndarray, direction: str = "AtoB") -> tuple[np.ndarray, np.ndarray]:
    """A side-by-side A|B image (W = 2H) -> (A, B); BtoA swaps them."""
    h, w = image.shape[:2]
    if w != 2 * h:
        raise ValueError(f"is {w}x{h}; an aligned A|B image is twice as wide as high")
    left, right = image[:, : w // 2], image[:, w // 2 :]
    if direction == "AtoB":
        return left, right
    if direction == "BtoA":
        return right, left
    raise ValueError(f"unknown direction {direction!r}; use AtoB or BtoA")


def prepare_aligned(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    root = Path(args.input)
    files = _image_files(root)
    style = default_line_style(args.size, args.stroke_width, args.margin) if args.canonicalize else None
    col = Collector(args.size, 3)
    for path in _progress(files, len(files), "aligned"):
        rel = path.relative_to(root)
        name = rel.as_posix()
        top = rel.parts[0] if len(rel.parts) > 1 else ""
        # The reference's layout (train/, val/, test/) keeps its split; a flat folder is hashed.
        split = {"train": "train", "val": "test", "test": "test"}.get(top) or hash_split(name, args.test_fraction)
        try:
            a_img, b_img = split_aligned(load_image(path), args.direction)
        except (ImageError, ValueError) as e:
            col.skip(name, str(e))
            continue
        if args.canonicalize:
            try:
                emap = edges.normalize_sketch(a_img, style)
            except edges.NothingDrawn as e:
                col.skip(name, f"A has no lines ({e})")
                continue
            a, b = emap.image, edges.apply_box(b_img, emap.box, args.size)
        else:
            a, b = to_gray(resize(a_img, args.size)), resize(b_img, args.size)
        col.add(Pair(name, split, _group_of(rel), rel.stem, a, b))
    meta = {
        "source": "aligned",
        "input_folder": str(root.resolve()),
        "licence": args.licence,
        "attribution": args.attribution,
        "input": "edges",
        "a": ("left half" if args.direction == "AtoB" else "right half")
             + (" -> edges.normalize_sketch (canonical line style)" if args.canonicalize else ", grayscale, resized as is"),
        "b": ("right half" if args.direction == "AtoB" else "left half")
             + (", framed with A's box" if args.canonicalize else ", resized"),
        "split_rule": f"top folder train/ -> train, val/ or test/ -> test; otherwise test when "
                      f"sha1(relative path)[:8] / 2**32 < {args.test_fraction}",
        "options": {"direction": args.direction, "canonicalize": args.canonicalize, "test_fraction": args.test_fraction},
    }
    return col.write(Path(args.out), {**meta, **_common_manifest(args, argv, style)})


# ----------------------------------------------------------------------------------------------
# Command line.


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _fraction(s: str) -> float:
    v = float(s)
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError("must be in [0, 1)")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train prepare", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="source", required=True, metavar="SOURCE")

    def common(sp: argparse.ArgumentParser, size: int) -> None:
        sp.add_argument("--out", required=True, help="output folder (manifest.json, train.npz, test.npz)")
        sp.add_argument("--size", type=int, default=size, help=f"output side in px (default {size})")
        sp.add_argument("--stroke-width", type=int, default=None,
                        help="canonical line width in px (default: 3 at 256, scaled with --size)")
        sp.add_argument("--margin", type=float, default=None, help="blank border as a fraction of the side")
        sp.add_argument("--limit", type=int, default=None, help="at most N items (per split for fashion-mnist)")
        sp.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes (default %(default)s)")
        sp.add_argument("-v", "--verbose", action="store_true")

    om = sub.add_parser("openmoji", help="OpenMoji line art -> colour drawings (npm openmoji@17.0.0)")
    common(om, 256)
    om.add_argument("--package", help="openmoji-17.0.0.tgz or its unpacked folder (default: npm pack into the cache)")
    om.add_argument("--groups", help="only these groups/subgroups, comma-separated (e.g. animals-nature,clothing)")
    om.add_argument("--exclude-groups", default=",".join(OPENMOJI_DEFAULT_EXCLUDE),
                    help="groups/subgroups to leave out (default: %(default)s; '' keeps all)")
    om.add_argument("--keep-duplicates", action="store_true",
                    help="keep drawings whose line art is identical to an earlier one (skin tones, colour variants)")
    om.add_argument("--supersample", type=int, default=2, help="render at size x this before framing (default 2)")

    fm = sub.add_parser("fashion-mnist", help="Fashion-MNIST footwear: HED edges -> grayscale photos")
    common(fm, 64)
    fm.add_argument("--path", default=FASHION_MNIST_DIR, help="folder with the idx files (default %(default)s)")
    fm.add_argument("--edges", choices=("hed", "canny"), default="hed")
    fm.add_argument("--no-invert", dest="invert", action="store_false",
                    help="keep Fashion-MNIST's negatives (light object on black) instead of dark-on-white")

    for name, helptext in (("folder", "any folder of photos -> edges"),
                           ("aligned", "the reference's side-by-side A|B images")):
        sp = sub.add_parser(name, help=helptext)
        common(sp, 256)
        sp.add_argument("--input", required=True, help="folder of images (searched recursively)")
        sp.add_argument("--test-fraction", type=_fraction, default=0.1)
        sp.add_argument("--licence", default="unknown (user-supplied data)")
        sp.add_argument("--attribution", default="")
        if name == "folder":
            sp.add_argument("--edges", choices=("hed", "canny"), default="hed")
        else:
            sp.add_argument("--direction", choices=("AtoB", "BtoA"), default="AtoB")
            sp.add_argument("--canonicalize", action="store_true",
                            help="redraw A in the canonical line style (default: keep A as is, resized)")
    return p


SOURCES = {"openmoji": prepare_openmoji, "fashion-mnist": prepare_fashion_mnist,
           "folder": prepare_folder, "aligned": prepare_aligned}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["prepare"]:  # called as `python -m train prepare ...` with the verb left in
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.size < 16:
        print(f"error: --size {args.size} is too small (16 at least)", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    try:
        manifest = SOURCES[args.source](args, argv)
    except (PrepareError, NotPrepared) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    c = manifest["counts"]
    print(f"{args.out}: {c['train']} train + {c['test']} test pairs at {args.size}px, "
          f"{len(manifest['skipped'])} skipped, "
          f"{sum(v['count'] for v in manifest['excluded'].values())} excluded, "
          f"{time.perf_counter() - t0:.0f} s")
    for s in manifest["skipped"][:10]:
        print(f"  skipped {s['name']}: {s['reason']}")
    if len(manifest["skipped"]) > 10:
        print(f"  ... and {len(manifest['skipped']) - 10} more (see manifest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
