"""GPU: eager fp32 vs eager fp16 vs the CUDA-graph fast path, batch 1 and 8, against the floor.

    python -m bench gpu [--size 256] [--reps 100] [--bandwidth-gbs B --tflops T]

For the default model (or its architecture with random weights) and the reference unet_256: one
dropout-on sample per batch item, timed with CUDA events (median and p95 over ``--reps`` calls
after warm-up). The floor is the larger of (weights + activations) bytes / memory bandwidth and
FLOPs / peak tensor throughput, from the detected GPU's data-sheet numbers (printed; override them
with ``--bandwidth-gbs`` and ``--tflops``). At these sizes the generator is far from either bound:
what is left after CUDA graphs is kernel time of ~40 small kernels.

Exits with status 1 and a one-line message when there is no CUDA GPU.
"""

from __future__ import annotations

import argparse
import sys

from .common import bench_models, ms, percentile, reference_generator, table

# Data-sheet peaks: (memory bandwidth GB/s, dense fp16 tensor TFLOPS, fp32 TFLOPS). Matched by
# substring of torch.cuda.get_device_name(), first match wins.
PEAKS = [
    ("H200", (4800, 989, 67)),
    ("H100 PCIe", (2000, 756, 51)),
    ("H100", (3350, 989, 67)),  # SXM
    ("A100-SXM4-80GB", (2039, 312, 19.5)),
    ("A100", (1555, 312, 19.5)),
    ("L40S", (864, 362, 91.6)),
    ("L4", (300, 121, 30.3)),
    ("A10G", (600, 125, 31.2)),
    ("A10", (600, 125, 31.2)),
    ("RTX 4090", (1008, 165, 82.6)),
    ("T4", (320, 65, 8.1)),
]


def count_cost(generator, size: int, batch: int = 1, bytes_per_value: int = 2) -> tuple[float, float]:
    """(FLOPs, bytes) of one forward pass: convolution FLOPs (2 per multiply-add), and weights +
    every layer's output written once and read once. Runs on whatever device the generator is."""
    import torch
    from torch import nn

    flops = 0.0
    act = 0.0

    def hook(m, args, out):
        nonlocal flops, act
        x = args[0]
        if isinstance(m, nn.Conv2d):
            flops += 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.ConvTranspose2d):
            flops += 2 * x.numel() * (m.out_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        act += 2 * out.numel()  # written by this layer, read by the next

    leaves = [m for m in generator.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(hook) for m in leaves]
    p = next(generator.parameters())
    try:
        with torch.no_grad():
            generator(torch.zeros(batch, generator.config.in_channels, size, size, device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
    weights = sum(t.numel() for t in generator.parameters())
    return flops, (weights + act) * bytes_per_value


def _peaks(name: str, bandwidth: float | None, tflops: float | None) -> tuple[float, float, str]:
    for key, (bw, fp16, _fp32) in PEAKS:
        if key in name:
            return bandwidth or bw, tflops or fp16, f"{key} data sheet: {bw} GB/s, {fp16} dense fp16 TFLOPS"
    if bandwidth and tflops:
        return bandwidth, tflops, "given on the command line"
    raise SystemExit(f"error: no peak numbers known for {name!r}: pass --bandwidth-gbs and --tflops")


def _time(fn, reps: int) -> list[float]:
    import torch

    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b) / 1000)
    return out


def run(size: int = 256, reps: int = 100, bandwidth: float | None = None, tflops: float | None = None) -> str:
    import copy

    import torch

    from p2p_demo.registry import ModelInfo
    from p2p_demo.render import Renderer
    from p2p_demo.masks import sample_seeds, seeded_forward

    name = torch.cuda.get_device_name()
    bw, peak, source = _peaks(name, bandwidth, tflops)
    torch.backends.cudnn.benchmark = True
    models = [(m.name, m.generator, m.note) for m in bench_models()]
    models.append(("reference unet_256", reference_generator(), ""))
    rows, notes = [], [f"GPU {name}; floor peaks: {source}"]
    for label, g_cpu, note in models:
        if note:
            notes.append(note)
        info = ModelInfo(id=label, line_style={"size": size})
        g32 = copy.deepcopy(g_cpu).to("cuda", torch.float32).eval()
        fast_r = Renderer(copy.deepcopy(g_cpu), info, device="cuda", backend="cuda-graph")
        eager_r = Renderer(copy.deepcopy(g_cpu), info, device="cuda", backend="torch")  # fp16 eager
        for batch in (1, 8):
            x = torch.rand(1, g_cpu.config.in_channels, size, size) * 2 - 1
            xb32 = x.to("cuda").expand(batch, -1, -1, -1)

            def eager32():
                with torch.inference_mode():
                    seeded_forward(g32, xb32, sample_seeds(0, range(batch)))

            def eager16():
                with torch.inference_mode():
                    eager_r._forward(x, list(range(batch)), seed=0, sampled=True)

            def graph16():
                with torch.inference_mode():
                    fast_r._forward(x, list(range(batch)), seed=0, sampled=True)

            flops, nbytes = count_cost(g32, size, batch, bytes_per_value=2)
            floor = max(nbytes / (bw * 1e9), flops / (peak * 1e12))
            for variant, fn in (("eager fp32", eager32), ("eager fp16", eager16), ("CUDA graph fp16 (adopted)", graph16)):
                t = _time(fn, reps)
                med = sorted(t)[len(t) // 2]
                rows.append((label, batch, variant, ms(med), ms(percentile(t, 0.95)), ms(med) / batch,
                             f"{floor * 1e6:.0f}", f"{med / floor:.0f}x", f"{flops / 1e9:.1f}", f"{nbytes / 1e6:.0f}"))
        if fast_r.backend == "cuda-graph":
            fast_r._fast.clear()
        else:
            notes.append(f"{label}: CUDA-graph capture failed; its 'CUDA graph' rows are eager fp16")
        torch.cuda.empty_cache()
    notes += ["times include drawing the dropout masks on the CPU and copying them in (the sampling contract)",
              "floor = max(bytes / bandwidth, FLOPs / peak); bytes = fp16 weights + each layer's output written "
              "and read once; FLOPs count convolutions only"]
    header = ("model", "batch", "variant", "ms p50", "ms p95", "ms/image", "floor us", "x floor", "GFLOP", "MB moved")
    return table(f"GPU: generator at {size}², one dropout-on sample per image", header, rows, notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench gpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--bandwidth-gbs", type=float, default=None, help="memory bandwidth, GB/s (overrides the table)")
    ap.add_argument("--tflops", type=float, default=None, help="peak dense fp16 TFLOPS (overrides the table)")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench gpu: no CUDA GPU on this machine (torch.cuda.is_available() is False, torch "
              f"{torch.__version__}); run it where a GPU is, e.g. a GPU Space", file=sys.stderr)
        return 1
    print(run(args.size, args.reps, args.bandwidth_gbs, args.tflops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
