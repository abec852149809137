"""Prepare paired training data: (edge map A, target B) arrays in a folder the trainer reads.

    python -m train prepare openmoji      --out data/openmoji-256 [--size 256]
    python -m train prepare fluent3d      --out data/fluent3d-256 [--size 256]
    python -m train prepare fashion-mnist --out data/fmnist-64    [--size 64] [--limit N]
    python -m train prepare folder        --out data/my-photos --input DIR [--edges hed|canny]
    python -m train prepare aligned       --out data/edges2x   --input DIR [--direction AtoB|BtoA]

A prepared dataset is a folder with ``manifest.json`` (source, licence, line style, counts,
skipped files and why, the command line) and one ``<split>.npz`` per split (``train``, ``test``)
holding ``A`` (N, S, S) uint8 edge maps (black lines on white), ``B`` (N, S, S, C) uint8 targets,
``names``, ``groups``, ``annotations`` and ``subgroups`` (N,) str. ``train.dataset.load_prepared`` is the one reader.

Every edge map is made by ``p2p_demo.edges``, the pipeline the app runs on users' input, so what
a model sees in training is what it sees when served. Line art and targets are framed with the
SAME square box (``apply_box``), so each pair stays pixel-aligned.

Each source is a module of train/sources/; what they share (collecting and writing pairs, splits,
the line style, worker processes) is train/writer.py. This module is the command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Sequence

from train.sources.aligned import prepare_aligned
from train.sources.fashion_mnist import FASHION_MNIST_DIR, prepare_fashion_mnist
from train.sources.fluent3d import prepare_fluent3d
from train.sources.folder import prepare_folder
from train.sources.openmoji import OPENMOJI_DEFAULT_EXCLUDE, prepare_openmoji
from train.writer import PrepareError


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

    fl = sub.add_parser("fluent3d", help="edges of Fluent Emoji 3D renders -> the shaded renders "
                                         "(npm @lobehub/fluent-emoji-3d@1.1.0)")
    common(fl, 256)
    fl.add_argument("--package", help="lobehub-fluent-emoji-3d-1.1.0.tgz or its unpacked folder "
                                      "(default: npm pack into the cache)")

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


SOURCES = {"openmoji": prepare_openmoji, "fluent3d": prepare_fluent3d, "fashion-mnist": prepare_fashion_mnist,
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
    except PrepareError as e:
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
