"""OpenMoji (npm openmoji@17.0.0, CC BY-SA 4.0): line art (black/svg) -> colour drawings (color/svg).

``python -m train prepare openmoji --out DIR``. Both SVGs are rendered with cairosvg, the line art
goes through ``p2p_demo.edges.normalize_sketch`` (what the app does to a user's sketch) and the
colour drawing is framed with the SAME box, so each pair stays pixel-aligned.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from p2p_demo import edges
from p2p_demo.image import load_image, to_gray
from train.writer import (Collector, Pair, PrepareError, common_manifest, default_line_style, imap, npm_source,
                          sha1_hex)

log = logging.getLogger(__name__)

OPENMOJI_VERSION = "17.0.0"
# The registry's integrity of the npm tarball of openmoji@17.0.0: a cached or given archive is checked against it.
OPENMOJI_INTEGRITY = "sha512-EBnYrNGdcdw+OSXmENeNE1yBNRu6tOraTmoOyUbJkTmvT/+XETp8RZLSJFzD3lrPc5N9CzsyPnRTk0Vp4UaI9w=="
# Groups or subgroups whose line art is no drawing: a flag's line art is an empty rectangle, a
# skin-tone swatch's an empty square. Matched against both `group` and `subgroups`.
OPENMOJI_DEFAULT_EXCLUDE = ("flags", "subdivision-flag", "skin-tone")
DUPLICATE = "same line art as an earlier drawing (skin-tone or colour variant)"
OPENMOJI_ATTRIBUTION = (
    "All emojis designed by OpenMoji - the open-source emoji and icon project. "
    "License: CC BY-SA 4.0 (https://openmoji.org)"
)


def openmoji_split(stem: str) -> str:
    """The project's fixed held-out rule: sha1(stem)'s first hex digit 0 or 1 -> test (1/8 of the
    drawings; ``writer.hash_split(stem, 0.125)`` gives the same split).

    ``stem`` is the SVG's file name without ``.svg`` exactly as OpenMoji spells it, e.g. "1F408"
    or "1F468-200D-1F469-200D-1F466".
    """
    return "test" if sha1_hex(stem)[0] in "01" else "train"


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


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
    package = npm_source(args.package, "openmoji", OPENMOJI_VERSION, OPENMOJI_INTEGRITY)
    entries, black, color = read_openmoji_package(package)
    col = Collector(args.size, 3)
    chosen = select_openmoji(entries, black, color, groups=_csv(args.groups), exclude=_csv(args.exclude_groups),
                             keep_duplicates=args.keep_duplicates, limit=args.limit, collector=col)
    by_stem = {e["hexcode"]: e for e in chosen}
    render_side = args.size * args.supersample
    jobs = [(e["hexcode"], black[e["hexcode"]], color[e["hexcode"]], render_side, style.to_dict()) for e in chosen]
    t0 = time.perf_counter()
    seen: dict[str, str] = {}  # line-art key -> stem kept: different SVGs can still draw the same lines
    for stem, a, b, err, key in imap(_openmoji_pair, jobs, args.workers, "openmoji"):
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
    return col.write(Path(args.out), {**meta, **common_manifest(args, argv, style)})
