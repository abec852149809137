"""Fashion-MNIST footwear (Debian's dataset-fashion-mnist, MIT): edges of the photo -> the photo.

``python -m train prepare fashion-mnist --out DIR``. The 28x28 photos are inverted back to
dark-on-white, upscaled, and their edges found by the app's photo pipeline (HED or Canny).
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from p2p_demo import edges
from p2p_demo.image import resize
from train.writer import (Collector, Pair, PrepareError, common_manifest, default_line_style, imap_resumable,
                          photo_pair, pipeline_fingerprint)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# Footwear classes of Fashion-MNIST, label -> group name.
FASHION_MNIST_FOOTWEAR = {5: "sandal", 7: "sneaker", 9: "ankle-boot"}
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


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
        for name, a, b, err in imap_resumable(photo_pair, jobs, args.workers, f"fashion-mnist {split}", cache):
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
    return col.write(Path(args.out), {**meta, **common_manifest(args, argv, style)})
