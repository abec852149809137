"""Turn a training checkpoint into a model folder the app can load.

``python -m train export --checkpoint runs/x/checkpoints/last.pt --out weights/<name>
[--name ... --description ... --expects ... --license ...] [--dtype fp16|fp32] [--push-to-hub REPO]``

Writes the generator through ``p2p_demo.hub.save_pretrained`` (the EMA of its weights when the run
kept one): fp16 ``model.safetensors``,
``config.json`` (generator config, line style, input kind, metrics) and a ``README.md`` model card
with the data (from the checkpoint's copy of the dataset manifest), licence, metrics (from the run's
metrics.json when present) and the intended input. Beside it, ``training/`` (``train.lineage``):
the raw generator, the discriminator and every stint of training so far, so ``train fit --init-from``
can continue the model; the app never reads it. ``--push-to-hub`` uploads the folder afterwards.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from train.lineage import checkpoint_lineage, checkpoint_license, recorded_source, write_training_state
from train.resume import checkpoint_generator, load_checkpoint

log = logging.getLogger(__name__)

METRIC_KEYS = ("l1", "psnr", "ssim", "edge_f1", "edge_f1_target", "flat_std", "paper_l1", "sharpness", "chroma",
               "variety", "l1_mean", "n", "seed")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def run_metrics(checkpoint: Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """Held-out metrics for the model card: the run's metrics.json (written at the end of fit) or,
    when fit ran without its final evaluation, what ``train evaluate`` wrote for this checkpoint
    (runs/<name>/eval/metrics_test.json, scored at the same step)."""
    run = checkpoint.parent.parent  # runs/<name>/checkpoints/last.pt -> runs/<name>/
    out: dict[str, Any] = {"steps": int(ckpt.get("step", 0))}
    ev: dict[str, Any] = {}
    path = run / "metrics.json"
    if path.is_file():
        m = json.loads(path.read_text())
        if m.get("steps") == out["steps"]:
            ev = m.get("eval") or {}
        else:
            log.warning("%s is from step %s, the checkpoint from step %s: metrics left out", path, m.get("steps"),
                        out["steps"])
    evaluated = run / "eval" / "metrics_test.json"
    if not ev and evaluated.is_file():
        m = json.loads(evaluated.read_text())
        if m.get("step") == out["steps"]:
            ev = m
        else:
            log.warning("%s is not from step %s: metrics left out", evaluated, out["steps"])
    out.update({f"test_{k}": (round(v, 4) if isinstance(v, float) else v)
                for k, v in ev.items() if k in METRIC_KEYS and v is not None})
    if ev:
        out["eval_mode"] = ev.get("mode", "")
    return out


def data_text(info: dict[str, Any]) -> str:
    """One paragraph on the training data for the model card."""
    if not info:
        return ""
    counts = info.get("counts", {})
    parts = [f"Source: {info.get('source', 'unknown')}"
             + (f" ({info['source_package']})" if info.get("source_package") else "") + "."]
    if counts:
        parts.append("Pairs: " + ", ".join(f"{v} {k}" for k, v in counts.items())
                     + f", {info.get('size', '?')} px, {info.get('channels', '?')} channel(s).")
    if info.get("a"):
        parts.append(f"Inputs: {info['a']}.")
    if info.get("b"):
        parts.append(f"Targets: {info['b']}.")
    if info.get("split_rule"):
        parts.append(f"Held-out split: {info['split_rule']}.")
    if info.get("licence"):
        parts.append(f"Data licence: {info['licence']}." + (f" {info['attribution']}" if info.get("attribution") else ""))
    if info.get("licence_note"):
        parts.append(info["licence_note"])
    if info.get("command"):
        parts.append(f"Prepared with `{info['command']}`.")
    return " ".join(parts)


def export(checkpoint: str | Path, out: str | Path, *, name: str | None = None, description: str = "",
           expects: str = "", license: str | None = None, dtype: str = "fp16", push_to_hub: str | None = None) -> Path:
    from p2p_demo import hub

    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    G = checkpoint_generator(ckpt)
    lineage = checkpoint_lineage(ckpt)
    data = ckpt.get("data") or {}
    line_style = ckpt.get("line_style")
    cfg = ckpt.get("config", {})
    licence = license or checkpoint_license(ckpt)
    if not licence:
        log.warning("%s: the trained model's licence is not known (its start's and its data's differ or are "
                    "unknown); give --license to say it", checkpoint)
        licence = hub.UNKNOWN_LICENSE
    train_note = (f"Trained with `python -m train fit`: loss {cfg.get('loss')} ({cfg.get('gan_mode')}, lambda "
                  f"{cfg.get('lambda_l1')}), PatchGAN n_layers {cfg.get('n_layers')}, batch {cfg.get('batch_size')} "
                  f"x {ckpt.get('world_size', 1)} process(es), Adam lr {cfg.get('lr')} ({cfg.get('beta1')}, "
                  f"{cfg.get('beta2')}), {ckpt.get('step')} steps ({ckpt.get('epoch', 0):.1f} epochs)"
                  + (f", EMA of the weights (decay {cfg.get('ema_decay')}) exported" if ckpt.get("G_ema") else "")
                  + (f", mode seeking lambda {cfg.get('lambda_ms')}"
                     + (f" over {cfg['ms_pool']}x{cfg['ms_pool']} cells" if cfg.get("ms_pool", 1) > 1 else "")
                     + (" of the object" if cfg.get("ms_object") else "")
                     if cfg.get("lambda_ms") else "")
                  + (f", flat-fill lambda {cfg['lambda_flat']}" if cfg.get("lambda_flat") else "")
                  + (f", autocast {cfg.get('amp')}" if cfg.get("amp", "none") != "none" else "")
                  + (f", started from {recorded_source(cfg['init_from'])}" if cfg.get("init_from") else "") + ". "
                  + lineage.summary() + " Sample with dropout on and per-image statistics (the reference's test mode).")
    folder = hub.save_pretrained(
        G, out, line_style=line_style or {}, name=name or Path(out).name, description=description,
        expects=expects or ("edge maps: black lines on white in the line style above" if line_style else "images"),
        license=licence, input=data.get("input", "edges" if line_style else "image"),
        metrics={**run_metrics(checkpoint, ckpt), "total_steps": lineage.steps, "total_images_seen": lineage.images_seen,
                 "total_cpu_hours": round(lineage.cpu_hours, 2)},
        data=data_text(data), notes=train_note, dtype=DTYPES[dtype],
    )
    write_training_state(folder, generator=ckpt["G"], discriminator=ckpt.get("D"), lineage=lineage)
    if push_to_hub:
        url = hub.push_to_hub(folder, push_to_hub)
        log.info("pushed to %s", url)
    return Path(folder)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m train export", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="runs/<name>/checkpoints/last.pt")
    p.add_argument("--out", required=True, help="model folder to write, e.g. weights/<name>")
    p.add_argument("--name", default=None, help="display name (default: the folder name)")
    p.add_argument("--description", default="")
    p.add_argument("--expects", default="", help="what input the model wants, e.g. 'shoe outlines'")
    p.add_argument("--license", "--licence", dest="license", default=None,
                   help="model licence (default: what the checkpoint carries: the data's, or with --init-from, "
                        "the start's and the data's combined, train.lineage.combined_license)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp16")
    p.add_argument("--push-to-hub", metavar="REPO", default=None, help="also upload to this Hub repo (owner/name)")
    args = p.parse_args(argv)
    folder = export(args.checkpoint, args.out, name=args.name, description=args.description, expects=args.expects,
                    license=args.license, dtype=args.dtype, push_to_hub=args.push_to_hub)
    print(folder)
    return 0
