"""CPU knobs tried for the fast path, each timed against the reference in the same rounds.

    python -m bench knobs [--size 256] [--budget 20] [--compile]

The default model's architecture (or the first bundled model), batch 1, one dropout-on sample with
the masks as inputs (``fast.MaskedGenerator``), so every variant computes the same thing. What the
Renderer adopted is marked; ``--compile`` adds torch.compile (inductor), whose first call
compiles C++ for a minute or more on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

from .common import bench_models, interleaved, ms, reference_generator, table


def _fp16_model(onnx_bytes: bytes) -> bytes:
    """The export with fp16 weights and compute, fp32 at the edges (Cast after inputs, before y)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load_from_string(onnx_bytes)
    g = m.graph
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype("float16"), init.name))
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype("float16")))
    casts = []
    for inp in g.input:
        if inp.type.tensor_type.elem_type == TensorProto.FLOAT:
            new = inp.name + "_fp16"
            for node in g.node:
                node.input[:] = [new if i == inp.name else i for i in node.input]
            casts.append(helper.make_node("Cast", [inp.name], [new], to=TensorProto.FLOAT16))
    out = g.output[0]
    half = out.name + "_fp16"
    for node in g.node:
        node.output[:] = [half if o == out.name else o for o in node.output]
    g.node.extend([helper.make_node("Cast", [half], [out.name], to=TensorProto.FLOAT)])
    for c in reversed(casts):
        g.node.insert(0, c)
    return m.SerializeToString()


def variants(g, size: int, with_compile: bool) -> tuple[dict[str, Callable[[], object]], list[str]]:
    import onnxruntime as ort
    import torch

    from p2p_demo import fast
    from p2p_demo.masks import DropoutPlan

    notes: list[str] = []
    threads = fast.physical_cores()
    plan = DropoutPlan.of(g)
    g.set_inference_mode(per_image_stats=True, dropout=True)
    mg = fast.MaskedGenerator(g, plan).eval()
    x = torch.rand(1, g.config.in_channels, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    masks = plan.draw([1], size, size)
    out: dict[str, Callable[[], object]] = {}

    def eager(n_threads: int, model=mg, inp=x, ms_=masks) -> Callable[[], object]:
        def run():
            torch.set_num_threads(n_threads)
            with torch.inference_mode():
                return model(inp, *ms_)
        return run

    out[f"torch eager, {threads} threads"] = eager(threads)
    out["torch eager, 1 thread"] = eager(1)
    cl = fast.MaskedGenerator(__import__("copy").deepcopy(g).to(memory_format=torch.channels_last), plan).eval()
    cl.plan = DropoutPlan.of(cl.generator)
    out["torch channels_last"] = eager(threads, cl, x.contiguous(memory_format=torch.channels_last),
                                       [m.contiguous(memory_format=torch.channels_last) for m in masks])
    bf = fast.MaskedGenerator(__import__("copy").deepcopy(g).to(torch.bfloat16), plan).eval()
    bf.plan = DropoutPlan.of(bf.generator)
    out["torch bf16"] = eager(threads, bf, x.bfloat16(), [m.bfloat16() for m in masks])
    try:
        with torch.inference_mode():
            traced = torch.jit.trace(mg, (x, *masks), check_trace=False)
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
        out["torch jit.freeze+optimize_for_inference"] = eager(threads, frozen)
    except Exception as e:  # noqa: BLE001 - a knob that does not work is a result too
        notes.append(f"jit.freeze failed: {type(e).__name__}: {str(e)[:120]}")
    if with_compile:
        try:
            compiled = torch.compile(mg, dynamic=False)
            t0 = time.perf_counter()
            eager(threads, compiled)()
            notes.append(f"torch.compile: first call (compilation) took {time.perf_counter() - t0:.0f} s")
            out["torch.compile (inductor)"] = eager(threads, compiled)
        except Exception as e:  # noqa: BLE001
            notes.append(f"torch.compile failed: {type(e).__name__}: {str(e)[:120]}")

    data = fast.export_onnx(g, plan)
    feed = {"x": x.numpy(), **{f"mask{i}": m.numpy() for i, m in enumerate(masks)}}

    def session(model: bytes, level, n_threads: int = threads, spin: bool = True):
        o = ort.SessionOptions()
        o.intra_op_num_threads = n_threads
        o.inter_op_num_threads = 1
        o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        o.graph_optimization_level = level
        o.log_severity_level = 3
        if not spin:
            o.add_session_config_entry("session.intra_op.allow_spinning", "0")
        s = ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])
        return lambda: s.run(["y"], feed)

    L = ort.GraphOptimizationLevel
    out[f"ORT, {threads} threads, opt ALL, no spin (adopted)"] = session(data, L.ORT_ENABLE_ALL, spin=False)
    out["ORT, spin-waiting (ORT's default)"] = session(data, L.ORT_ENABLE_ALL)
    out["ORT, opt EXTENDED (no NCHWc layout)"] = session(data, L.ORT_ENABLE_EXTENDED, spin=False)
    out["ORT, 1 thread"] = session(data, L.ORT_ENABLE_ALL, 1, spin=False)
    try:
        out["ORT fp16 weights+compute"] = session(_fp16_model(data), L.ORT_ENABLE_ALL, spin=False)
        out["ORT fp16 weights+compute"]()
    except Exception as e:  # noqa: BLE001
        out.pop("ORT fp16 weights+compute", None)
        notes.append(f"ORT fp16: not usable on this CPU ({type(e).__name__}: {str(e).splitlines()[0][:140]})")
    return out, notes


def run(size: int = 256, budget: float = 20.0, with_compile: bool = False) -> str:
    import torch

    from p2p_demo import fast

    threads = fast.physical_cores()
    m = bench_models()[0]
    fns, notes = variants(m.generator, size, with_compile)
    ref = reference_generator()
    ref.set_inference_mode(per_image_stats=True, dropout=False)
    xr = torch.rand(1, 3, size, size)

    def reference():
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return ref(xr)

    fns = {"reference unet_256, torch eager": reference, **fns}
    timings = interleaved(fns, budget_s=budget, min_reps=5)
    tr = timings["reference unet_256, torch eager"]
    rows = []
    for name, t in timings.items():
        ratios = sorted(a / c for a, c in zip(tr.samples, t.samples))
        speedup = ratios[len(ratios) // 2]
        rows.append((name, ms(t.median), ms(t.p95), ms(t.cpu_median), f"{speedup:.2f}x", len(t.samples)))
    torch.set_num_threads(threads)
    if m.note:
        notes.insert(0, m.note)
    notes.append("x faster: median of per-round wall (reference / variant); cpu: CPU time of the same calls, "
                 "all threads (spin-waiting included), an upper bound of the quiet wall time")
    notes.append("ORT fp16 on an AVX2 CPU: ORT has no fp16 Conv kernels here and runs them in fp32 "
                 "behind inserted Casts, so at best equal")
    return table(f"CPU knobs: {m.name}, {size}², batch 1, one dropout-on sample (masks as inputs)",
                 ("variant", "wall p50", "wall p95", "cpu p50", "x faster", "n"), rows, notes, threads)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench knobs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--budget", type=float, default=20.0, help="seconds of round-robin timing (default 20)")
    ap.add_argument("--compile", action="store_true", help="also try torch.compile (slow to compile)")
    args = ap.parse_args(argv)
    print(run(args.size, args.budget, args.compile))


if __name__ == "__main__":
    main()
