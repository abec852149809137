"""Fast inference: ONNX Runtime on the CPU, fp16 + CUDA graphs on a GPU, same samples as eager.

Both fast paths take the dropout masks as *inputs* instead of drawing them inside the network. The
masks are the ones eager PyTorch applies: each element a hash of (the sample's seed, the layer's
number, the element's index), drawn by ``p2p_demo.masks`` (``DropoutPlan.draw``), the one
definition, which ``static/p2p_masks.js`` repeats for the browser. A sample rendered by ONNX
Runtime, a CUDA graph or ONNX Runtime Web is therefore the same sample as the eager one for the
same seed (equal to float rounding). A mask already holds the ``1 / (1 - p)`` scale, so dropout
off is simply masks of ones, the identity.

* ``masks.DropoutPlan``: which layers take masks, in forward order, and their shapes at any size.
* :func:`export_onnx`: the generator as ONNX with dynamic batch / height / width and one mask input
  per dropout layer (``x``, ``mask0``, ``mask1``, ...; output ``y``). Per-image normalisation
  exports as ``InstanceNormalization``.
* :class:`OnnxRunner`: an ONNX Runtime session tuned for a small CPU (one intra-op thread per
  physical core, sequential execution, all graph optimisations, no spin-waiting), the export
  cached on disk (``~/.cache/p2p_demo/onnx``, ``P2P_ONNX_CACHE``) by a hash of the weights.
* :class:`CudaGraphRunner`: fp16 generator, one CUDA graph captured per (batch, H, W) with static
  input and mask buffers, replayed for every request of that shape.

Nothing here touches CUDA or imports onnxruntime at import time.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .files import atomic_write
from .masks import DropoutPlan
from .nets import Generator

log = logging.getLogger(__name__)

# Bump when the exported graph changes for the same weights (invalidates the disk cache).
EXPORT_VERSION = 2
OPSET = 17
CACHE_ENV = "P2P_ONNX_CACHE"  # a folder, or "off" to keep exports in memory only
DEFAULT_CACHE = Path.home() / ".cache" / "p2p_demo" / "onnx"


# --------------------------------------------------------------------------------------------
# Dropout masks as inputs


class MaskedGenerator(nn.Module):
    """``forward(x, *masks)``: the generator with its dropout masks as explicit inputs."""

    def __init__(self, generator: Generator, plan: DropoutPlan) -> None:
        super().__init__()
        self.generator = generator
        self.plan = plan

    def forward(self, x: torch.Tensor, *masks: torch.Tensor) -> torch.Tensor:
        self.plan.set(masks)
        try:
            return self.generator(x)
        finally:
            self.plan.set(None)


# --------------------------------------------------------------------------------------------
# ONNX export


def input_names(plan: DropoutPlan) -> list[str]:
    return ["x"] + plan.mask_names()


def export_onnx(generator: Generator, plan: DropoutPlan | None = None) -> bytes:
    """The generator as ONNX bytes: inputs ``x`` (B, C, H, W) and ``mask<i>``, output ``y``.

    Uses the generator in its sampling configuration (per-image statistics); the masks decide
    dropout. Batch, height and width are dynamic (H and W multiples of ``config.multiple``).
    """
    plan = plan or DropoutPlan.of(generator)
    size = generator.config.multiple
    generator.set_inference_mode(per_image_stats=True, dropout=True)
    was_training = generator.training
    generator.eval()
    names = input_names(plan)
    x = torch.zeros(1, generator.config.in_channels, size, size)
    masks = plan.ones(1, size, size)
    dynamic = {"x": {0: "batch", 2: "height", 3: "width"}, "y": {0: "batch", 2: "height", 3: "width"}}
    for i, name in enumerate(names[1:]):
        dynamic[name] = {0: "batch", 2: f"height_{i}", 3: f"width_{i}"}
    buf = io.BytesIO()
    # The TorchScript-based exporter: it needs no extra package (the dynamo one needs onnxscript)
    # and gives a plain Conv / InstanceNormalization / ConvTranspose graph for these networks.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(MaskedGenerator(generator, plan), (x, *masks), buf, dynamo=False,
                          input_names=names, output_names=["y"], dynamic_axes=dynamic, opset_version=OPSET)
    generator.train(was_training)
    return buf.getvalue()


def weights_key(generator: Generator) -> str:
    """A content hash of architecture + weights + exporter, naming the cached export."""
    h = hashlib.sha256()
    h.update(json.dumps(generator.config.to_dict(), sort_keys=True).encode())
    h.update(f"export {EXPORT_VERSION} opset {OPSET} torch {torch.__version__}".encode())
    for name, t in sorted(generator.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def cache_dir() -> Path | None:
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in ("", "0", "off", "none", "false"):
        return None
    return Path(value) if value else DEFAULT_CACHE


def cached_export(generator: Generator, plan: DropoutPlan, folder: Path | None) -> bytes:
    """export_onnx, read from / written to ``folder/<hash>.onnx`` when a folder is given."""
    if folder is None:
        return export_onnx(generator, plan)
    path = folder / f"{weights_key(generator)}.onnx"
    if path.is_file():
        try:
            return path.read_bytes()
        except OSError as e:
            log.warning("cannot read the cached ONNX export %s (%s); exporting again", path, e)
    data = export_onnx(generator, plan)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: p.write_bytes(data))  # a concurrent reader sees no half file
    except OSError as e:
        log.warning("cannot cache the ONNX export in %s (%s); keeping it in memory", folder, e)
    return data


# --------------------------------------------------------------------------------------------
# ONNX Runtime on the CPU


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads share a core's FMA units)."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    try:
        phys = core = ""
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    core = value.strip()
                    cores.add((phys, core))
    except OSError:
        pass
    return max(1, min(allowed, len(cores) or allowed))


def onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


class OnnxRunner:
    """An ONNX Runtime CPU session of one generator; call it with x and the masks."""

    def __init__(self, onnx_bytes: bytes, plan: DropoutPlan, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or physical_cores()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # warnings about unused initialisers etc. are noise here
        # No spin-waiting after a run: on a small shared CPU the PNG encoding and the next request
        # need those cores; measured as fast or faster under load (python -m bench knobs).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        self.onnx_bytes = onnx_bytes  # kept: the browser renderer downloads the same file (p2p_demo.web)
        self.plan = plan
        self.names = input_names(plan)
        self.threads = opts.intra_op_num_threads

    @classmethod
    def from_generator(cls, generator: Generator, *, threads: int | None = None,
                       folder: Path | None | str = "default") -> "OnnxRunner":
        plan = DropoutPlan.of(generator)
        data = cached_export(generator, plan, cache_dir() if folder == "default" else (Path(folder) if folder else None))
        return cls(data, plan, threads=threads)

    def __call__(self, x: torch.Tensor, masks: Sequence[torch.Tensor]) -> torch.Tensor:
        """x: (B, C, H, W) float32 in [-1, 1] on the CPU; masks from the plan. Returns y like x."""
        feed = {"x": np.ascontiguousarray(x.numpy(), dtype=np.float32)}
        for name, m in zip(self.names[1:], masks):
            feed[name] = m.numpy()
        (y,) = self.session.run(["y"], feed)
        return torch.from_numpy(y)


# --------------------------------------------------------------------------------------------
# CUDA: fp16 + CUDA graphs


class CudaGraphRunner:
    """Replays the fp16 generator from CUDA graphs, one per (batch, C, H, W), kept LRU.

    Each graph owns static input and mask buffers; a call copies the request into them and
    replays, which removes the per-layer launch overhead that dominates at batch 1 (the generator
    is ~40 small kernels). All graphs share one memory pool. ``cudnn.benchmark`` is set by the
    Renderer before the first capture so each shape gets its fastest convolution algorithms.
    """

    def __init__(self, generator: Generator, plan: DropoutPlan, *, max_graphs: int = 8) -> None:
        p = next(generator.parameters())
        if p.device.type != "cuda":
            raise ValueError("CudaGraphRunner needs a generator on a CUDA device")
        self.generator = generator
        self.plan = plan
        self.device, self.dtype = p.device, p.dtype
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple[int, ...], tuple] = OrderedDict()
        self._pool = None
        self._lock = threading.Lock()

    def _capture(self, shape: tuple[int, ...]) -> tuple:
        b, _, h, w = shape
        x = torch.zeros(shape, device=self.device, dtype=self.dtype)
        masks = [m.to(self.device, self.dtype) for m in self.plan.ones(b, h, w)]
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        self.generator.set_inference_mode(per_image_stats=True, dropout=True)  # the masks decide
        self.plan.set(masks)
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm-up off the capture: cuDNN autotuning, allocations
                for _ in range(2):
                    self.generator(x)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                y = self.generator(x)
        finally:
            self.plan.set(None)
        return graph, x, masks, y

    def __call__(self, x: torch.Tensor, masks: Sequence[torch.Tensor]) -> torch.Tensor:
        """x: (B, C, H, W) in [-1, 1], any device; masks: CPU float tensors from the plan. Returns a
        new tensor on the GPU, in the generator's dtype."""
        x = x.to(self.device, self.dtype)
        shape = tuple(x.shape)
        # Static buffers are made and filled under inference mode only (one tensor kind, no autograd).
        with self._lock, torch.inference_mode():
            entry = self._graphs.get(shape)
            if entry is None:
                entry = self._capture(shape)
                self._graphs[shape] = entry
                while len(self._graphs) > self.max_graphs:
                    self._graphs.popitem(last=False)
            self._graphs.move_to_end(shape)
            graph, sx, smasks, sy = entry
            sx.copy_(x)
            for buf, m in zip(smasks, masks):
                buf.copy_(m, non_blocking=True)
            graph.replay()
            return sy.clone()

    def clear(self) -> None:
        """Free every captured graph and its buffers (after an out-of-memory error, for one)."""
        with self._lock:
            self._graphs.clear()
            self._pool = None
