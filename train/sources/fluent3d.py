"""Fluent Emoji 3D (npm @lobehub/fluent-emoji-3d, MIT, Microsoft): edges of a shaded render -> the render.

``python -m train prepare fluent3d --out DIR``. Each 256x256 WebP render is flattened onto white
(its alpha) and its edge map made by the app's photo path (``p2p_demo.edges.photo_to_edges``: HED,
pix2pix's post-processing, the canonical line style), so what the model sees in training is what a
drawing or an uploaded photo becomes in the app. The render is framed with the SAME box.

Skin-tone variants (code points 1F3FB-1F3FF in the name) draw the same figure in another colour:
one input with five targets teaches the mean colour, so only the base emoji is kept. The held-out
split is OpenMoji's rule (shared by every emoji source) applied to the base code point, the first
one in the name: "1f468-200d-1f373" (man cook) goes where "1F468" (man) goes, so no figure is in
both splits and a drawing's split is the same in both emoji data sets.
"""

from __future__ import annotations

import argparse
import re
import tarfile
import time
import unicodedata
from pathlib import Path
from typing import Any, Sequence

from p2p_demo import edges
from train.sources.openmoji import openmoji_split
from train.writer import (Collector, Pair, PrepareError, common_manifest, default_line_style, imap_resumable,
                          npm_source, photo_pair, pipeline_fingerprint)

FLUENT3D_PACKAGE = "@lobehub/fluent-emoji-3d"
FLUENT3D_VERSION = "1.1.0"
FLUENT3D_INTEGRITY = "sha512-Wlq2lVStTnr8BDpIJ0pEnTKO4LuDxxqTEhTvRtD1DLRF0me7ogeRQjKoehDHXuVJ2Qaecgl5wRBv60lUAG3h7g=="
SKIN_TONES = ("1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff")
FLUENT3D_ATTRIBUTION = ("Fluent Emoji by Microsoft (3D style), MIT licence; packaged as "
                        f"npm {FLUENT3D_PACKAGE}@{FLUENT3D_VERSION} by LobeHub")
SKIN_TONE = "skin-tone variant (the same figure as its base emoji)"


def fluent3d_split(stem: str) -> str:
    """OpenMoji's held-out rule on the base code point: "1f431" -> sha1("1F431") -> test."""
    return openmoji_split(stem.split("-")[0].upper())


def annotation(stem: str) -> str:
    """The emoji's Unicode name, e.g. "1f468-200d-1f373" -> "man cooking"; the code points where
    this Python's Unicode tables do not know it yet."""
    names = []
    for cp in re.split("[-_]", stem):  # a subdivision flag's tag letters are joined with "_"
        code = int(cp, 16)
        # joiner, emoji presentation, keycap, tag letters: no word of their own
        if code in (0x200D, 0xFE0F, 0x20E3) or 0xE0000 <= code <= 0xE007F:
            continue
        name = unicodedata.name(chr(code), "") if code <= 0x10FFFF else ""
        if not name:
            return stem.upper()
        names.append(name.lower())
    return " ".join(names) or stem.upper()


def read_fluent3d_package(package: Path) -> dict[str, bytes]:
    """{stem: WebP bytes} from the .tgz or a folder (the package root, or the folder npm unpacks into)."""
    renders: dict[str, bytes] = {}
    if package.is_file():
        try:
            with tarfile.open(package, "r:*") as tar:
                for m in tar:
                    parts = m.name.split("/")
                    if m.isfile() and parts[-2:-1] == ["assets"] and parts[-1].endswith(".webp"):
                        renders[parts[-1][: -len(".webp")]] = tar.extractfile(m).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise PrepareError(f"{package}: not a readable .tgz ({e})") from e
    elif package.is_dir():
        root = package / "package" if (package / "package" / "assets").is_dir() else package
        renders = {p.stem: p.read_bytes() for p in sorted((root / "assets").glob("*.webp"))}
    else:
        raise PrepareError(f"{package}: no such file or folder")
    if not renders:
        raise PrepareError(f"{package}: no assets/*.webp inside; is it the {FLUENT3D_PACKAGE} npm package?")
    return renders


def prepare_fluent3d(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    style = default_line_style(args.size, args.stroke_width, args.margin)
    package = npm_source(args.package, FLUENT3D_PACKAGE, FLUENT3D_VERSION, FLUENT3D_INTEGRITY)
    renders = read_fluent3d_package(package)
    col = Collector(args.size, 3)
    stems = []
    for stem in sorted(renders):
        if any(t in stem.split("-") for t in SKIN_TONES):
            col.exclude(SKIN_TONE, stem)
        else:
            stems.append(stem)
    if args.limit is not None:
        for stem in stems[args.limit:]:
            col.exclude("beyond --limit", stem)
        stems = stems[: args.limit]
    edges.load_hed()  # missing HED weights stop the run here, not once per render
    jobs = [(stem, renders[stem], "hed", style.to_dict(), False) for stem in stems]
    t0 = time.perf_counter()
    cache = Path(args.out) / ".partial" / pipeline_fingerprint(source="fluent3d", version=FLUENT3D_VERSION,
                                                               style=style.to_dict(), limit=args.limit)
    for stem, a, b, err in imap_resumable(photo_pair, jobs, args.workers, "fluent3d", cache):
        if err is not None:
            col.skip(stem, err)
            continue
        col.add(Pair(stem, fluent3d_split(stem), "", annotation(stem), a, b))
    meta = {
        "source": "fluent3d",
        "source_version": FLUENT3D_VERSION,
        "source_package": f"npm {FLUENT3D_PACKAGE}@{FLUENT3D_VERSION}",
        "licence": "MIT",
        "attribution": FLUENT3D_ATTRIBUTION,
        "input": "edges",
        "a": "p2p_demo.edges.photo_to_edges(method='hed') of the render flattened onto white: the app's photo path",
        "b": "the 256x256 render, alpha flattened onto white, framed with the edge map's box (edges.apply_box); RGB",
        "split_rule": "test when the first hex digit of sha1(first code point, upper case, utf-8) is 0 or 1, else "
                      "train (OpenMoji's rule on the base code point)",
        "options": {"limit": args.limit},
        "timing_s": {"edges": round(time.perf_counter() - t0, 1)},
        "annotations": "each pair's Unicode name (e.g. 'cat', 'running shoe') is in the npz's `annotations`",
    }
    return col.write(Path(args.out), {**meta, **common_manifest(args, argv, style)})
