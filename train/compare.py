"""Controlled comparisons at an equal training budget: the paper's ablations, the width sweep and
the reference recipe side by side.

    python -m train compare loss   --data data/openmoji-128 --out-dir runs/compare
    python -m train compare patch  --data data/openmoji-128 --out-dir runs/compare
    python -m train compare ngf    --data data/openmoji-128 --out-dir runs/compare
    python -m train compare recipe --data data/openmoji-256 --out-dir runs/compare --seconds 900
    python -m train compare levers --data data/openmoji-128 --out-dir runs/compare --seconds 480 --threads 1
    python -m train compare curriculum --data data/openmoji-256 --low-res-data data/openmoji-128 --seconds 1500 --threads 1
    python -m train compare continue --data data/openmoji-256 --init-from weights/openmoji --seconds 900 --threads 1

Each suite trains its variants with ``python -m train fit`` (one process per variant, so a crash or
a kill costs one variant; a finished variant is not trained again), then writes into
``<out-dir>/<suite>/``:

(the runs themselves go to ``<out-dir>/<run>/``)

* ``results.json`` and ``results.md``: per variant the held-out L1, PSNR, SSIM and edge F1 (train/
  evaluate's numbers, the reference's test mode, seed 0), steps, images seen and wall time;
* ``grid.png``: one picture comparing them: held-out drawings (cats and shoes first) in rows,
  input | one column per variant | target.

Budgets. ``loss``, ``patch`` and ``ngf`` give every variant the same schedule: ``--epochs`` epochs
(half at constant learning rate, half decaying to 0) of the compact recipe (U-Net ngf 16,
InstanceNorm, batch 4, 1-channel input, PatchGAN ndf 32), changing one thing at a time; the
variants run one after the other with all cores. ``recipe`` gives the reference recipe (unet_256,
BatchNorm, batch 1, fp32, vanilla GAN, lambda 100, 286 -> 256 jitter, Adam 2e-4/0.5, constant lr as
its 100 + 100 epochs would have it for far longer than any budget here) and the project's recipe
(the compact one at lr 1e-3, the lr decaying to 0 over the second half of the budget) the same
wall-clock budget (``--seconds``) on the same device; they run at the same time with ``--threads``
each (default: the cores split evenly), so both see the same machine. A recipe's run folder is
named by a digest of its options, so changing a recipe trains it again instead of reusing a stale run.

``levers`` measures what each of the project's training levers gives for the same wall-clock budget
(``--seconds``, the budget lr schedule), one after the other with ``--threads`` threads each: the
budgeted recipe in fp32, then with bf16 autocast + channels-last (more images in the same time),
then + an EMA of the weights, then from that one + the resize-conv decoder, + mode seeking, + the
hinge loss and + an R1 penalty on D (D overpowers G in these runs).

``curriculum`` measures the resolution curriculum: a 7-level U-Net (a 1x1 bottleneck at 128², so
it takes both sizes) trained from scratch for ``--seconds`` on ``--data`` (256²) throughout, against
the same net trained on ``--low-res-data`` (the same pairs prepared at 128²) for the first three
quarters of the time, then on ``--data``; one after the other, scored at 256².

``continue`` measures the levers where the bundled models are now: every variant continues the same
trained model (``--init-from``: its G, EMA and D) for the same ``--seconds``, all at the same time
with ``--threads`` each, with the recipe of the bundled models' stints (Adam 2e-4 on the budget
schedule, a third constant then decaying to 0, EMA 0.999, bf16, channels-last), changing one thing:
the D learning rate, the L1 weight, the freehand augmentation, an R1 penalty on D (two weights).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from p2p_demo.image import grid, save_image, to_images
from p2p_demo.nets import GeneratorConfig, build_generator
from train.dataset import PairedData, load_prepared, pick_examples
from train.evaluate import load_model, render_test_mode

log = logging.getLogger(__name__)

# The project's compact recipe (the ablations' base, at the reference's Adam 2e-4).
COMPACT = {"ngf": 16, "norm": "instance", "in_channels": 1, "batch_size": 4, "ndf": 32}
# ... and as it spends a wall-clock budget: Adam 1e-3 (as the bundled openmoji model), the lr
# decaying to 0 over the second half of the time given (train fit --lr-schedule budget).
# (The suite's 100 + 100 epochs only set that shape: the clock ends the run long before them.)
BUDGETED = {**COMPACT, "lr": 1e-3, "lr_schedule": "budget"}
# The reference recipe: TrainConfig's defaults, spelled out so the table says what ran.
REFERENCE = {"ngf": 64, "norm": "batch", "in_channels": 0, "batch_size": 1, "ndf": 64, "amp": "none"}
# The levers, each measured against the one before it (the last two against "+ EMA").
FAST = {**BUDGETED, "amp": "bf16", "channels_last": True}
WITH_EMA = {**FAST, "ema_decay": 0.999}
# Continuing a trained model (the bundled models' stints; the architecture comes from --init-from).
CONTINUED = {"batch_size": 4, "lr": 2e-4, "lr_schedule": "budget", "ema_decay": 0.999, "amp": "bf16",
             "channels_last": True}

# suite -> [(label, fit options)]; each changes one thing from the compact recipe's L1 + cGAN, 70x70.
SUITES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "loss": [("L1", {"loss": "l1"}), ("cGAN", {"loss": "cgan"}), ("L1+cGAN", {"loss": "l1+cgan"}),
             ("L1+GAN", {"loss": "l1+gan"})],
    "patch": [("1x1 PixelGAN", {"n_layers": 0}), ("16x16", {"n_layers": 1}), ("70x70", {"n_layers": 3}),
              ("286x286", {"n_layers": 5})],
    "ngf": [("ngf 8", {"ngf": 8}), ("ngf 16", {"ngf": 16}), ("ngf 32", {"ngf": 32})],
    "recipe": [("reference recipe", REFERENCE), ("project recipe", BUDGETED)],
    "levers": [("budgeted fp32", BUDGETED), ("+ bf16, channels-last", FAST), ("+ EMA 0.999", WITH_EMA),
               ("+ resize-conv", {**WITH_EMA, "upsample": "resize"}),
               ("+ mode seeking 1", {**WITH_EMA, "lambda_ms": 1.0}),
               ("+ hinge loss", {**WITH_EMA, "gan_mode": "hinge"}), ("+ R1 0.01", {**WITH_EMA, "r1_gamma": 0.01})],
    "curriculum": [("256² throughout", {**WITH_EMA, "num_downs": 7}),
                   ("128² for ¾, then 256²", {**WITH_EMA, "num_downs": 7, "low_res_share": 0.75})],
    "continue": [("continued", CONTINUED), ("+ D lr ÷ 5", {**CONTINUED, "lr_d": 4e-5}),
                 ("+ λ_L1 300", {**CONTINUED, "lambda_l1": 300.0}), ("+ λ_L1 1000", {**CONTINUED, "lambda_l1": 1000.0}),
                 ("+ λ_L1 300, freehand 0.5", {**CONTINUED, "lambda_l1": 300.0, "freehand": 0.5}),
                 ("+ λ_L1 300, R1 0.01", {**CONTINUED, "lambda_l1": 300.0, "r1_gamma": 0.01}),
                 ("+ λ_L1 300, R1 0.05", {**CONTINUED, "lambda_l1": 300.0, "r1_gamma": 0.05})],
}
TIMED = ("recipe", "levers", "curriculum", "continue")  # suites that give each variant the same wall-clock budget
NAMING_ONLY = ("init_steps",)  # schedule keys that name a run but are not fit options
VARIANT_ONLY = ("low_res_data",)  # schedule keys given only to the variants that use them
PARALLEL = ("recipe", "continue")  # their variants train at the same time, so all see the same machine
# OpenMoji's held-out cats and shoes first (the test split has two cats and a sandal), then a spread.
ROW_PATTERNS = (r"cat face", r"kissing cat", r"sandal|shoe|boot", r"tropical fish", r"grinning face", r"house",
                r"\bdog\b", r"\bcar\b")
METRICS = ("l1", "psnr", "ssim", "edge_f1", "flat_std", "sharpness", "chroma", "variety")


def run_name(suite: str, label: str, schedule: dict[str, Any]) -> str:
    """The variant's run folder. loss/patch/ngf name runs by what they train, so a variant two suites
    share (the compact L1 + cGAN, 70x70, ngf 16 baseline is in all three) is trained once."""
    if suite in TIMED:  # named by what it trains too: a changed recipe is a new run, never a stale one
        options = dict(SUITES[suite])[label]
        if schedule.get("init_from"):  # what it continues is part of what it trains: the model as it is now
            options = {**options, "init_from": schedule["init_from"], "init_steps": schedule.get("init_steps", 0)}
        options = json.dumps(options, sort_keys=True)
        digest = hashlib.sha256(options.encode()).hexdigest()[:8]
        return f"{suite}-" + "".join(c if c.isascii() and c.isalnum() else "-" for c in label.lower()).strip("-") + \
            f"-{digest}-{schedule['max_seconds']:g}s"
    o = {"loss": "l1+cgan", "n_layers": 3, **COMPACT, **dict(SUITES[suite])[label]}
    return f"{o['loss']}-d{o['n_layers']}-ngf{o['ngf']}-{schedule['n_epochs'] + schedule['n_epochs_decay']:g}ep"


def fit_argv(data: str, out_dir: Path, name: str, options: dict[str, Any], schedule: dict[str, Any]) -> list[str]:
    merged = {k: v for k, v in {**options, **schedule}.items() if k not in NAMING_ONLY}
    argv = [sys.executable, "-m", "train", "fit", "--data", data, "--out-dir", str(out_dir), "--name", name,
            "--no-progress", "--checkpoint-every", "200", "--sample-every", "0"]
    for key, value in merged.items():
        flag = key.replace("_", "-")
        argv += ([f"--{flag}" if value else f"--no-{flag}"] if isinstance(value, bool) else [f"--{flag}", str(value)])
    return argv


def train_variants(suite: str, data: str, out_dir: Path, schedule: dict[str, Any], parallel: bool) -> None:
    """Run ``fit`` for every variant of the suite that has no metrics.json yet; resume a killed one."""
    procs: list[tuple[Path, subprocess.Popen]] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for label, options in SUITES[suite]:
        name = run_name(suite, label, schedule)
        folder = out_dir / name
        if (folder / "metrics.json").exists():
            log.info("%s: done already (%s)", label, folder)
            continue
        base = {} if suite in TIMED else COMPACT
        if options.get("low_res_share"):  # the curriculum's variant trains on the low-resolution pairs first
            base = {**base, "low_res_data": schedule["low_res_data"]}
        common = {k: v for k, v in schedule.items() if k not in VARIANT_ONLY}
        argv = fit_argv(data, out_dir, name, {**base, **options}, common)
        if (folder / "checkpoints" / "last.pt").exists():
            argv = argv[:4] + ["--resume", "--out-dir", str(out_dir), "--name", name, "--no-progress"]
        log.info("%s: %s", label, " ".join(argv[1:]))
        logf = out_dir / f"{name}.log"
        with open(logf, "a") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
        procs.append((logf, proc))
        if not parallel and proc.wait():
            raise SystemExit(f"compare: {label} failed, see {logf}")
    for logf, proc in procs:
        if proc.wait():
            raise SystemExit(f"compare: a run failed, see {logf}")


def pick_rows(data: str, count: int) -> list[int]:
    d = load_prepared(data, "test")
    return pick_examples([str(a) for a in d.get("annotations", d["names"])], ROW_PATTERNS, count)


# PIL's built-in bitmap font has Latin-1 only: what the labels use beyond it, spelled out
_PLAIN = str.maketrans({"²": "^2", "¾": "3/4", "λ": "lambda", "÷": "/", "→": "->"})


def labelled(image: np.ndarray, labels: Sequence[str], cell: int, pad: int = 4, band: int = 18) -> np.ndarray:
    """The grid with a white band on top naming each column."""
    labels = [text.translate(_PLAIN) for text in labels]
    h, w = image.shape[:2]
    canvas = Image.new("RGB", (w, h + band), "white")
    canvas.paste(Image.fromarray(image), (0, band))
    draw = ImageDraw.Draw(canvas)
    for j, text in enumerate(labels):
        x = pad + j * (cell + pad)
        draw.text((x + 2, 3), text, fill=(0, 0, 0))
    return np.asarray(canvas)


def comparison_grid(suite: str, data: str, out_dir: Path, schedule: dict[str, Any], rows: int,
                    seed: int = 0) -> np.ndarray:
    held_out = PairedData.load(data, "test")
    idx = pick_rows(data, rows)
    columns: list[list[np.ndarray]] = []
    for label, _ in SUITES[suite]:
        G, _ = load_model(str(out_dir / run_name(suite, label, schedule) / "checkpoints" / "last.pt"))
        a, _ = held_out.pairs(torch.tensor(idx), G.config.in_channels)
        # Row k keeps its held-out index's dropout seed, as in evaluate.
        outs = [to_images(render_test_mode(G, a[k : k + 1], seed, first_index=i))[0] for k, i in enumerate(idx)]
        columns.append(outs)
    table = []
    for k, i in enumerate(idx):
        target = held_out.B[i].permute(1, 2, 0).numpy()
        table.append([held_out.A[i].numpy(), *(col[k] for col in columns), target])
    labels = ["input", *(label for label, _ in SUITES[suite]), "target"]
    return labelled(grid(table), labels, held_out.size)


def collect(suite: str, out_dir: Path, schedule: dict[str, Any]) -> list[dict[str, Any]]:
    results = []
    for label, options in SUITES[suite]:
        name = run_name(suite, label, schedule)
        m = json.loads((out_dir / name / "metrics.json").read_text())
        ev = m.get("eval") or {}
        results.append({"variant": label, "options": options, "steps": m["steps"], "images_seen": m["images_seen"],
                        "wall_time_s": round(m["wall_time_s"], 1), "images_per_s": round(m["images_per_s"], 2),
                        **{k: ev.get(k) for k in METRICS}, "n": ev.get("n"), "run": str(out_dir / name)})
    return results


def generator_ms(config: GeneratorConfig, size: int, repeats: int = 30) -> tuple[float, str, int]:
    """Median time of one dropout-on sample on a size x size drawing, through the app's Renderer
    (its CPU backend: ONNX Runtime when installed), for a generator like ``config`` made as deep
    as ``size`` needs (a 1x1 bottleneck, as shipped). Timing does not depend on the weights."""
    from p2p_demo.registry import ModelInfo
    from p2p_demo.render import Renderer

    num_downs = int(math.log2(size))
    levels = min(config.dropout_levels, GeneratorConfig.most_dropout_levels(num_downs))
    G = build_generator(GeneratorConfig.from_dict({**config.to_dict(), "num_downs": num_downs,
                                                   "dropout_levels": levels}))
    r = Renderer(G, ModelInfo(id="timing"), device="cpu")
    drawing = np.full((size, size), 255, np.uint8)
    drawing[size // 4 : 3 * size // 4, size // 2] = 0
    for _ in range(3):
        r.generate(drawing, n=1, seed=0)
    times = []
    for k in range(repeats):
        t = time.perf_counter()
        r.generate(drawing, n=1, seed=k)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3), r.backend, sum(t.numel() for t in G.parameters())


def markdown(results: list[dict[str, Any]], extra: Sequence[str] = ()) -> str:
    head = ["variant", "L1 ↓", "PSNR ↑", "SSIM ↑", "edge F1 ↑", "flat std ↓", "sharpness", "chroma", "variety ↑",
            "steps", "images", "wall s", *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def num(v: Any, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    for r in results:
        cells = [r["variant"], f"{r['l1']:.3f}", f"{r['psnr']:.2f}", f"{r['ssim']:.3f}", num(r["edge_f1"], ".3f"),
                 num(r.get("flat_std"), ".2f"), num(r.get("sharpness"), ".2f"), num(r.get("chroma"), ".2f"),
                 num(r.get("variety"), ".3f"), str(r["steps"]), str(r["images_seen"]), f"{r['wall_time_s']:.0f}",
                 *(str(r.get(k, "")) for k in extra)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m train compare", description=__doc__.split("\n\n")[0])
    p.add_argument("suite", choices=sorted(SUITES))
    p.add_argument("--data", required=True, help="prepared dataset folder with a test split")
    p.add_argument("--out-dir", default="runs/compare")
    p.add_argument("--epochs", type=float, default=2.0, help="loss/patch/ngf: epochs per variant (half decay)")
    p.add_argument("--seconds", type=float, default=900.0, help="recipe, levers: wall-clock budget per variant")
    p.add_argument("--threads", type=int, default=0, help="recipe, levers: CPU threads per run (0 = cores / 2)")
    p.add_argument("--init-from", default="", help="continue: the model every variant continues (folder, id or checkpoint)")
    p.add_argument("--low-res-data", default="", help="curriculum: the same pairs prepared at 128² (train prepare --size 128)")
    p.add_argument("--rows", type=int, default=6, help="held-out drawings in the grid")
    p.add_argument("--speed-size", type=int, default=256, help="ngf: image side for the generator timing")
    args = p.parse_args(argv)

    out_dir = Path(args.out_dir)
    suite_dir = out_dir / args.suite
    suite_dir.mkdir(parents=True, exist_ok=True)
    if args.suite in TIMED:
        threads = args.threads or max(1, (os.cpu_count() or 2) // 2)
        schedule = {"max_seconds": args.seconds, "workers": threads, "n_epochs": 100, "n_epochs_decay": 100}
        if args.suite == "continue":
            if not args.init_from:
                p.error("the continue suite needs --init-from MODEL: the trained model every variant continues")
            from train.lineage import load_init_source

            # its steps so far name the runs too: continuing the model again after a new stint is a new run
            schedule.update(init_from=args.init_from, n_epochs=50,
                            init_steps=load_init_source(args.init_from).lineage.steps)
        if args.suite == "curriculum":
            if not args.low_res_data:
                p.error("the curriculum suite needs --low-res-data DIR: --data's pairs prepared at a smaller --size")
            schedule["low_res_data"] = args.low_res_data
    elif args.init_from:
        p.error(f"--init-from is for the continue suite; {args.suite} trains from scratch")
    else:
        schedule = {"n_epochs": args.epochs / 2, "n_epochs_decay": args.epochs / 2}
    train_variants(args.suite, args.data, out_dir, schedule, parallel=args.suite in PARALLEL)

    results = collect(args.suite, out_dir, schedule)
    extra: list[str] = []
    if args.suite == "ngf":
        speed = f"CPU ms @{args.speed_size}²"
        for r in results:
            G, _ = load_model(str(Path(r["run"]) / "checkpoints" / "last.pt"))
            ms_, backend, params = generator_ms(G.config, args.speed_size)
            r[f"params (M) @{args.speed_size}²"] = round(params / 1e6, 2)
            r[speed] = round(ms_, 1)
            r["backend"] = backend
        extra = [f"params (M) @{args.speed_size}²", speed]
    (suite_dir / "results.json").write_text(json.dumps(results, indent=2))
    (suite_dir / "results.md").write_text(markdown(results, extra))
    save_image(comparison_grid(args.suite, args.data, out_dir, schedule, args.rows), suite_dir / "grid.png")
    print(markdown(results, extra))
    print(f"wrote {suite_dir / 'results.md'} and {suite_dir / 'grid.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
