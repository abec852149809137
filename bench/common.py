"""What every benchmark section shares: the machine line, timing, tables and the models to time."""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    from p2p_demo.registry import ModelInfo

ROOT = Path(__file__).resolve().parent.parent

# The architecture of the default bundled model (openmoji): what a visitor of the app waits for.
DEFAULT_ARCH = dict(in_channels=1, out_channels=3, ngf=16, num_downs=8, norm="instance")


# --------------------------------------------------------------------------------------------
# The machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def machine(threads: int | None = None) -> str:
    import torch

    from p2p_demo.fast import physical_cores

    try:
        import onnxruntime as ort

        ort_version = ort.__version__
    except ImportError:
        ort_version = "not installed"
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = "avx512" if "avx512f" in text else ("avx2" if "avx2" in text else "")
    except OSError:
        pass
    return (f"CPU {cpu_model()} ({os.cpu_count()} logical, {physical_cores()} physical cores, {flags}), "
            f"torch threads {threads or torch.get_num_threads()}, torch {torch.__version__}, "
            f"onnxruntime {ort_version}, python {platform.python_version()}, load average {load_average()}")


def command() -> str:
    return "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


# --------------------------------------------------------------------------------------------
# Timing


def percentile(xs: Sequence[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass
class Timing:
    samples: list[float]  # seconds, on the clock asked for
    cpu: list[float] = field(default_factory=list)  # CPU seconds of this process (all threads), same calls

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu) if self.cpu else float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        return percentile(self.samples, 0.95)


def interleaved(fns: dict[str, Callable[[], object]], *, budget_s: float, min_reps: int = 5,
                max_reps: int = 200, warmup: int = 1, clock: Callable[[], float] = time.perf_counter) -> dict[str, Timing]:
    """Time several functions round-robin, so load changes on a shared machine hit all alike.

    Each round runs every function once, in a rotating order; rounds go on until ``budget_s`` of
    wall time is spent (at least ``min_reps``). ``clock=time.process_time`` measures CPU time
    instead: with one thread, close to what a quiet machine would take, whatever the load.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    out: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    t_end = time.perf_counter() + budget_s
    r = 0
    while r < max_reps and (r < min_reps or time.perf_counter() < t_end):
        for name in names[r % len(names):] + names[: r % len(names)]:
            c0, t0 = time.process_time(), clock()
            fns[name]()
            out[name].append(clock() - t0)
            cpu[name].append(time.process_time() - c0)
        r += 1
    return {n: Timing(v, cpu[n]) for n, v in out.items()}


# --------------------------------------------------------------------------------------------
# Tables


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]], notes: Sequence[str] = (),
          threads: int | None = None) -> str:
    """A fixed-width table with the machine and the command above it and notes below."""
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    out = [f"== {title}", f"   command: {command()}", f"   machine: {machine(threads)}", line(cells[0]),
           line(["-" * w for w in widths])]
    out += [line(r) for r in cells[1:]]
    out += [f"   {n}" for n in notes]
    return "\n".join(out) + "\n"


def _fmt(c: object) -> str:
    if isinstance(c, float):
        return f"{c:.1f}" if abs(c) >= 10 else f"{c:.2f}"
    return str(c)


def ms(seconds: float) -> float:
    return seconds * 1000.0


# --------------------------------------------------------------------------------------------
# Models


@dataclass
class BenchModel:
    name: str
    generator: object  # p2p_demo.nets.Generator
    info: ModelInfo
    note: str = ""


def reference_generator():
    """The reference unet_256 (GeneratorConfig() defaults, 54.4 M parameters), random weights."""
    import torch

    from p2p_demo.nets import GeneratorConfig, build_generator
    from train.discriminator import init_weights

    torch.manual_seed(0)
    g = build_generator(GeneratorConfig())
    init_weights(g)
    return g.eval()


def bench_models(*, include_stand_in: bool = True) -> list[BenchModel]:
    """Every available bundled model; plus the default architecture, random weights, if none."""
    import torch

    from p2p_demo.hub import load_generator
    from p2p_demo.nets import GeneratorConfig, build_generator
    from train.discriminator import init_weights
    from p2p_demo.registry import ModelInfo, list_models

    out = []
    for m in list_models():
        if m.available and m.source == "bundled":
            g, info = load_generator(m.id)
            out.append(BenchModel(m.id, g.eval(), info))
    if not out and include_stand_in:
        torch.manual_seed(0)
        g = build_generator(GeneratorConfig(**DEFAULT_ARCH))
        init_weights(g)
        info = ModelInfo(id="stand-in")
        desc = ", ".join(f"{k}={v}" for k, v in DEFAULT_ARCH.items())
        out.append(BenchModel("default-arch*", g.eval(), info,
                              f"* no bundled model is installed yet: the default model's architecture ({desc}) "
                              "with random weights (same compute as the trained one)"))
    return out
