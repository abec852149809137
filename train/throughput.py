"""Training throughput: the project's fast recipe against the reference recipe, in one run.

``python -m train bench [--device auto|cpu|cuda] [--size 256] [--steps N] [--warmup N]``

Both recipes run the real training step (train.trainer.Trainer: D step + G step, full unet and
70x70 PatchGAN at ngf/ndf 64) on the same synthetic in-memory pairs with on-device jitter, and the
table gives training images per second (warm-up steps excluded) and the ratio.

* reference: unet with ngf 64 (unet_256 at 256 px), BatchNorm, batch 1, fp32, eager, jitter on;
* fast, on CUDA: batch 16, bf16 autocast, channels_last, torch.compile (when it works here);
* fast, on CPU: batch 4, fp32, NCHW, eager. Measured on a 2-core AVX2 CPU: the bigger batch is what
  pays (about 2x); channels_last was slower there, bf16 autocast has no hardware behind it without
  AVX512-BF16/AMX, and compiling (``--compile``) takes minutes.

Per-image throughput with a bigger batch is not the same training run (batch 1 is the paper's
setting), which is why both numbers are printed side by side.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from typing import Sequence

import torch

from train.config import GeneratorOptions, TrainConfig
from train.dataset import Jitter, PairedData
from train.distributed import resolve_device
from train.trainer import Trainer


def recipes(device: torch.device, size: int, compile_: bool | None = None) -> dict[str, TrainConfig]:
    base = TrainConfig(generator=GeneratorOptions(ngf=64, num_downs=int(math.log2(size)), norm="batch"), ndf=64,
                       n_layers=3, jitter=True, flip=True)
    reference = replace(base, batch_size=1, amp="none", channels_last=False, compile=False)
    if device.type == "cuda":
        can_compile = compile_ if compile_ is not None else _compile_works()
        fast = replace(base, batch_size=16, amp="bf16", channels_last=True, compile=can_compile)
    else:
        fast = replace(base, batch_size=4, amp="none", channels_last=False, compile=bool(compile_))
    return {"fast": fast, "reference": reference}


def _compile_works() -> bool:
    try:
        import triton  # noqa: F401  (inductor's GPU backend)
    except ImportError:
        return False
    return True


def synthetic_pairs(n: int, size: int, device: torch.device, seed: int = 0) -> PairedData:
    g = torch.Generator().manual_seed(seed)
    a = torch.where(torch.rand(n, size, size, generator=g) < 0.05, 0, 255).to(torch.uint8)  # sparse "ink"
    b = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return PairedData(a.to(device), b.to(device))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(cfg: TrainConfig, device: torch.device, size: int, steps: int, warmup: int) -> dict[str, float]:
    """Training images/s of ``cfg`` over ``steps`` timed steps after ``warmup`` untimed ones."""
    data = synthetic_pairs(max(2 * cfg.batch_size, 8), size, device)
    trainer = Trainer(cfg, cfg.generator.resolve(size=size, channels=3), device=device, steps_per_epoch=1_000_000)
    jitter = Jitter(size, jitter=cfg.jitter, flip=cfg.flip)
    rng = torch.Generator().manual_seed(0)

    def one(step: int) -> None:
        idx = torch.arange(step * cfg.batch_size, (step + 1) * cfg.batch_size) % len(data)
        a, b = jitter(*data.pairs(idx, 3), rng)
        trainer.step(a, b)

    t0 = time.perf_counter()
    for s in range(warmup):
        one(s)
    _sync(device)
    t1 = time.perf_counter()
    for s in range(steps):
        one(warmup + s)
    _sync(device)
    t2 = time.perf_counter()
    return {"images_per_s": steps * cfg.batch_size / (t2 - t1), "ms_per_step": 1000 * (t2 - t1) / steps,
            "warmup_s": t1 - t0}


def describe(cfg: TrainConfig) -> str:
    g = cfg.generator
    return (f"ngf {g.ngf}, {g.norm}norm, batch {cfg.batch_size}, {'fp32' if cfg.amp == 'none' else cfg.amp}, "
            f"{'channels_last' if cfg.channels_last else 'NCHW'}, {'compiled' if cfg.compile else 'eager'}, "
            f"jitter {'on' if cfg.jitter else 'off'}")


def bench(device: str = "auto", size: int = 256, steps: int | None = None, warmup: int | None = None,
          compile_: bool | None = None, threads: int = 0) -> dict[str, dict[str, float]]:
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    steps = steps or (50 if dev.type == "cuda" else 2)
    warmup = warmup if warmup is not None else (10 if dev.type == "cuda" else 1)
    results = {}
    for name, cfg in recipes(dev, size, compile_).items():
        try:
            results[name] = {**measure(cfg, dev, size, steps, warmup), "recipe": describe(cfg)}
        except Exception as e:  # e.g. compile unavailable: measure eager instead and say so
            if not cfg.compile:
                raise
            cfg = replace(cfg, compile=False)
            results[name] = {**measure(cfg, dev, size, steps, warmup), "recipe": describe(cfg) + f" (compile failed: {type(e).__name__})"}
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=None, help="timed steps per recipe (default: 50 on GPU, 2 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 10 on GPU, 1 on CPU)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the fast recipe (default: on CUDA when triton is present)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = p.parse_args(argv)
    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"training throughput at {args.size}x{args.size} on {name} (torch {torch.__version__})")
    res = bench(args.device, args.size, args.steps, args.warmup, args.compile, args.threads)
    print(f"| recipe    | images/s | ms/step | settings |\n|-----------|---------:|--------:|----------|")
    for k, r in res.items():
        print(f"| {k:<9} | {r['images_per_s']:8.2f} | {r['ms_per_step']:7.0f} | {r['recipe']} |")
    print(f"fast / reference: {res['fast']['images_per_s'] / res['reference']['images_per_s']:.2f}x")
    return 0
