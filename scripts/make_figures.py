"""Pictures of what a model draws, for the README and model cards.

    python scripts/make_figures.py --model openmoji --data data/openmoji-256 --out docs/figures/openmoji

writes  heldout.png   held-out drawings: input | output | target (the reference's test mode, seed 0)
        variety.png   one held-out drawing, 8 seeds (dropout on)
        sketches.png  hand-drawn sketches (p2p_demo/examples) through the app's own pipeline:
                      drawing | what the model sees | output
        before_after.png  with --before MODEL: held-out drawings, input | before | after | target
                      (both seed 0), and the sketches as drawing | before | after
        freehand.png  with --freehand: held-out drawings redrawn as by hand (train.freehand, the
                      split `evaluate --freehand` scores): hand-drawn input | [before |] output | target
        variety_compare.png  with --variety-of MODEL ...: a held-out cat face and car (input, target),
                      then a row per model (--model first): seeds 0-3 of each
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from p2p_demo.examples import example_paths  # noqa: E402
from p2p_demo.image import grid, load_image, resize, save_image  # noqa: E402
from p2p_demo.render import Renderer  # noqa: E402
from train.dataset import pick_examples  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", help="prepared dataset folder (its test split is used)")
    p.add_argument("--out", required=True)
    p.add_argument("--before", help="an earlier version of the model, for before_after.png")
    p.add_argument("--freehand", action="store_true", help="also freehand.png (edge-map datasets)")
    p.add_argument("--variety-of", nargs="+", default=[], metavar="MODEL",
                   help="other versions of the model, for variety_compare.png")
    p.add_argument("--patterns", nargs="*", default=[r"\bcat\b", r"running shoe", r"boot", r"high-heeled",
                                                     r"cat face", r"\bdog\b", r"\bapple\b", r"\bcar\b"])
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    r = Renderer.load(args.model)
    before = Renderer.load(args.before) if args.before else None

    if args.data:
        from train.dataset import load_prepared

        d = load_prepared(args.data, "test")
        ann = [str(a) for a in d.get("annotations", d["names"])]
        idx = pick_examples(ann, args.patterns, 8)
        rows = []
        for i in idx:
            a, b = d["A"][i], d["B"][i]
            rows.append([a, r.generate(a, n=1, seed=0)[0], b])
        pairs = [rows[i] + rows[i + 1] for i in range(0, len(rows) - 1, 2)]
        save_image(grid(pairs), out / "heldout.png")
        print("held-out:", ", ".join(ann[i] for i in idx))

        if before is not None:
            ba = [[d["A"][i], before.generate(d["A"][i], n=1, seed=0)[0], row[1], d["B"][i]] for i, row in zip(idx, rows)]
            pairs = [ba[i] + ba[i + 1] for i in range(0, len(ba) - 1, 2)]
            save_image(grid(pairs), out / "before_after.png")

        if args.freehand:
            from train.evaluate import line_style_of
            from train.dataset import load_manifest
            from train.freehand import perturb_all

            hand = perturb_all(d["A"], 0, line_style_of(load_manifest(args.data)))  # the evaluate --freehand split
            fh = [[hand[i]] + ([before.generate(hand[i], n=1, seed=0)[0]] if before is not None else [])
                  + [r.generate(hand[i], n=1, seed=0)[0], d["B"][i]] for i in idx]
            save_image(grid([fh[i] + fh[i + 1] for i in range(0, len(fh) - 1, 2)]), out / "freehand.png")

        a = d["A"][idx[0]]
        samples = r.generate(a, n=8, seed=0)
        save_image(grid([[a] + samples[:4], [d["B"][idx[0]]] + samples[4:]]), out / "variety.png")

        if args.variety_of:
            shown = pick_examples(ann, [r"cat face", r"\bcar\b"], 2)
            blank = np.full_like(d["B"][shown[0]], 255)
            rows = [[x for i in shown for x in (d["A"][i], d["B"][i], blank, blank)]]
            for model in [r] + [Renderer.load(m) for m in args.variety_of]:
                rows.append([y for i in shown for y in model.generate(d["A"][i], n=4, seed=0)])
            save_image(grid(rows), out / "variety_compare.png")

    def enlarged(x: np.ndarray) -> np.ndarray:  # small models shown enlarged, pixel for pixel
        return cv2.resize(x, (256, 256), interpolation=cv2.INTER_NEAREST)

    rows, ba_rows = [], []
    for path in example_paths():
        drawing = resize(load_image(path), 256)
        res = r(drawing, edges="sketch", n=1, seed=0)
        rows.append([drawing, enlarged(res.edges), enlarged(res.images[0])])
        if before is not None:
            ba_rows.append([drawing, enlarged(before(drawing, edges="sketch", n=1, seed=0).images[0]),
                            enlarged(res.images[0])])
    save_image(grid(rows), out / "sketches.png")
    if ba_rows:
        save_image(grid(ba_rows), out / "sketches_before_after.png")
    print("wrote", ", ".join(str(f) for f in sorted(out.glob("*.png"))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
