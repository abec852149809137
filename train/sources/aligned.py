"""The reference's side-by-side A|B images: ``python -m train prepare aligned --input DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from p2p_demo import edges
from p2p_demo.image import ImageError, load_image, resize, to_gray
from train.writer import (Collector, Pair, common_manifest, default_line_style, folder_manifest, group_of, hash_split,
                          image_files, progress)


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
    files = image_files(root)
    style = default_line_style(args.size, args.stroke_width, args.margin) if args.canonicalize else None
    col = Collector(args.size, 3)
    for path in progress(files, len(files), "aligned"):
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
        col.add(Pair(name, split, group_of(rel), rel.stem, a, b))
    meta = {
        "source": "aligned",
        **folder_manifest(args, root),
        "a": ("left half" if args.direction == "AtoB" else "right half")
             + (" -> edges.normalize_sketch (canonical line style)" if args.canonicalize else ", grayscale, resized as is"),
        "b": ("right half" if args.direction == "AtoB" else "left half")
             + (", framed with A's box" if args.canonicalize else ", resized"),
        "split_rule": f"top folder train/ -> train, val/ or test/ -> test; otherwise test when "
                      f"sha1(relative path)[:8] / 2**32 < {args.test_fraction}",
        "options": {"direction": args.direction, "canonicalize": args.canonicalize, "test_fraction": args.test_fraction},
    }
    return col.write(Path(args.out), {**meta, **common_manifest(args, argv, style)})
