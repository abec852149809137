"""The /render path on the CPU: file -> edge map -> generator -> PNG/JPEG, with each stage's share.

    python -m bench render [--budget 60] [--backend auto|torch|onnx]

What the app's /render endpoint does for one request, minus HTTP: decode the uploaded file and
make the edge map (``sketch``: normalise a drawing; ``canny``: a photo's edges), run the default
model for 1 or 4 dropout-on samples, and encode the images the endpoint returns as app.py does:
the output and the edge map as PNG (p2p_demo.image.encode_image, the app's encoder), every
sample as a JPEG gallery preview (PIL defaults, as Gradio).

Drawings are held-out OpenMoji line art (``data/openmoji-256/test.npz``) when prepared, else the
bundled examples; the photo is scikit-image's astronaut (512 x 512). Besides wall time, each
request's CPU time (all threads of this process) is reported: ONNX Runtime does not spin-wait, so
on a quiet machine a request cannot take longer than the CPU it uses, and that bound barely moves
with other load. The goals are checked against it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import ROOT, bench_models, interleaved, ms, percentile, table

GOALS_MS = {1: 60.0, 4: 150.0}


def drawings(folder: Path, k: int = 8) -> tuple[list[Path], str]:
    """k held-out drawings written as PNG files (the app receives files), and where they came from."""
    from PIL import Image

    test = ROOT / "data" / "openmoji-256" / "test.npz"
    if test.is_file():
        with np.load(test) as d:
            a, names = d["A"], d["names"]
        pick = np.linspace(0, len(a) - 1, k).astype(int)
        paths = []
        for i in pick:
            p = folder / f"openmoji-{i}.png"
            Image.fromarray(a[i]).save(p)
            paths.append(p)
        return paths, f"{k} held-out OpenMoji drawings (data/openmoji-256/test.npz: {', '.join(names[pick][:3])}, ...)"
    from p2p_demo.examples import example_paths

    paths = list(example_paths())
    return paths, f"the bundled examples ({', '.join(p.name for p in paths)})"


def photo(folder: Path) -> Path:
    from PIL import Image
    from skimage import data

    p = folder / "astronaut.png"
    Image.fromarray(data.astronaut()).save(p)
    return p


def encode(image: np.ndarray, fmt: str = "png") -> bytes:
    from p2p_demo.image import encode_image

    return encode_image(image, fmt)


def request(r, source: Path, edges: str, n: int) -> dict[str, float]:
    c0 = time.process_time()
    t0 = time.perf_counter()
    edge_map = r.make_edges(str(source), edges)
    t1 = time.perf_counter()
    images = r.generate(edge_map, n=n, seed=int(t0 * 1000) % 1000)
    t2 = time.perf_counter()
    encode(images[0])
    encode(edge_map)
    for img in images:
        encode(img, "jpeg")
    t3 = time.perf_counter()
    return {"edges": t1 - t0, "model": t2 - t1, "encode": t3 - t2, "total": t3 - t0, "cpu": time.process_time() - c0}


def run(budget: float = 60.0, backend: str = "auto") -> str:
    import torch

    from p2p_demo.fast import physical_cores
    from p2p_demo.render import Renderer

    threads = physical_cores()
    torch.set_num_threads(threads)
    m = bench_models()[0]
    r = Renderer(m.generator, m.info, device="cpu", backend=backend)
    with tempfile.TemporaryDirectory() as tmp:
        sketches, source_note = drawings(Path(tmp))
        photo_path = photo(Path(tmp))
        cases = {(kind, n): [] for kind in ("sketch", "photo, canny") for n in (1, 4)}
        counter = {"i": 0}

        def case(kind: str, n: int):
            def go():
                src = sketches[counter["i"] % len(sketches)] if kind == "sketch" else photo_path
                counter["i"] += 1
                cases[(kind, n)].append(request(r, src, "sketch" if kind == "sketch" else "canny", n))
            return go

        fns = {f"{k}/{n}": case(k, n) for k, n in cases}
        timings = interleaved(fns, budget_s=budget, min_reps=5)
    rows, notes = [], []
    for (kind, n), reqs in cases.items():
        reqs = reqs[-len(timings[f"{kind}/{n}"].samples):]  # drop the warm-up calls
        tot = [q["total"] for q in reqs]
        p50 = float(np.median(tot))
        share = {s: float(np.median([q[s] / q["total"] for q in reqs])) * 100 for s in ("edges", "model", "encode")}
        cpu = [q["cpu"] for q in reqs]
        est = min(ms(float(np.median(cpu))), ms(p50))  # load only slows a request: both bound the quiet time
        goal = GOALS_MS[n] if kind == "sketch" else None
        rows.append((kind, n, ms(p50), ms(percentile(tot, 0.95)), est, ms(percentile(cpu, 0.95)), f"{share['edges']:.0f}%",
                     f"{share['model']:.0f}%", f"{share['encode']:.0f}%",
                     "-" if goal is None else f"<= {goal:.0f}: {'met' if est <= goal else 'NOT met'}", len(reqs)))
    if m.note:
        notes.append(m.note)
    notes += [f"model {m.name}, backend {r.backend}; sketches: {source_note}; photo: astronaut 512x512 -> canny",
              "cpu: CPU time of the request (all threads); without spin-waiting it bounds the quiet wall time; "
              "the goals are checked against the lower of the wall and cpu p50s (both upper bounds)",
              "stages: edges = decode + edge map; model = generator (n samples, one batch); "
              "encode = output + edge map as PNG, n JPEG gallery previews"]
    header = ("input", "samples", "wall p50", "wall p95", "cpu p50", "cpu p95", "edges", "model", "encode",
              "goal (ms, quiet)", "n")
    return table("/render path on the CPU: file -> edges -> generator -> PNG", header, rows, notes, threads)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench render", description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=60.0, help="seconds of round-robin timing (default 60)")
    ap.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto")
    args = ap.parse_args(argv)
    print(run(args.budget, args.backend))


if __name__ == "__main__":
    main()
