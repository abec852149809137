"""Any folder of photos -> (their edges, the photo): ``python -m train prepare folder --input DIR``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

from p2p_demo import edges
from train.writer import (Collector, Pair, common_manifest, default_line_style, folder_manifest, group_of, hash_split,
                          image_files, imap_resumable, photo_pair, pipeline_fingerprint)


def prepare_folder(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    root = Path(args.input)
    files = image_files(root)
    style = default_line_style(args.size, args.stroke_width, args.margin)
    col = Collector(args.size, 3)
    if args.edges == "hed":
        edges.load_hed()  # missing HED weights stop the run here, not once per photo
    jobs = [(p.relative_to(root).as_posix(), str(p), args.edges, style.to_dict(), False) for p in files]
    t0 = time.perf_counter()
    cache = Path(args.out) / ".partial" / pipeline_fingerprint(source="folder", input=str(root.resolve()),
                                                               style=style.to_dict(), edges=args.edges)
    for name, a, b, err in imap_resumable(photo_pair, jobs, args.workers, "photos", cache):
        if err is not None:
            col.skip(name, err)
            continue
        rel = Path(name)
        col.add(Pair(name, hash_split(name, args.test_fraction), group_of(rel), rel.stem, a, b))
    meta = {
        "source": "folder",
        **folder_manifest(args, root),
        "a": f"p2p_demo.edges.photo_to_edges(method={args.edges!r})",
        "b": "the photo framed with the edge map's box (edges.apply_box, white fill); RGB",
        "split_rule": f"test when sha1(relative path, utf-8)[:8] / 2**32 < {args.test_fraction}",
        "options": {"edges": args.edges, "test_fraction": args.test_fraction},
        "timing_s": {"edges": round(time.perf_counter() - t0, 1)},
    }
    return col.write(Path(args.out), {**meta, **common_manifest(args, argv, style)})
