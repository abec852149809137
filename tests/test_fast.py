"""Fast backends: the ONNX Runtime path gives the same samples as eager PyTorch, at any size."""

import numpy as np
import pytest
import torch

from p2p_demo import fast
from p2p_demo.masks import DropoutPlan, seeded_forward
from p2p_demo.nets import SeededDropout
from p2p_demo.registry import ModelInfo
from p2p_demo.render import Renderer

from conftest import tiny_generator

pytest.importorskip("onnxruntime")

INFO = ModelInfo(id="tiny", line_style={"size": 64, "stroke_width": 2, "margin": 0.06})


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(fast.CACHE_ENV, str(tmp_path / "onnx"))


def pair(layout: str = "reference", **cfg) -> tuple[Renderer, Renderer]:
    """The same weights behind the eager and the ONNX backends."""
    torch_r = Renderer(tiny_generator(layout, **cfg), INFO, device="cpu", backend="torch")
    onnx_r = Renderer(tiny_generator(layout, **cfg), INFO, device="cpu", backend="onnx")
    assert (torch_r.backend, onnx_r.backend) == ("torch", "onnx")
    return torch_r, onnx_r


@pytest.fixture(scope="module")
def renderers(tmp_path_factory) -> tuple[Renderer, Renderer]:
    with pytest.MonkeyPatch.context() as mp:  # the export happens in the constructor
        mp.setenv(fast.CACHE_ENV, str(tmp_path_factory.mktemp("onnx")))
        return pair()


def masked_outputs(torch_r: Renderer, onnx_r: Renderer, x: torch.Tensor, seed: int, n: int):
    """Raw float outputs of both backends for samples 0..n-1 (dropout on)."""
    with torch.inference_mode():
        a = torch_r._forward(x, list(range(n)), seed=seed, sampled=True)
        b = onnx_r._forward(x, list(range(n)), seed=seed, sampled=True)
    return a, b


@pytest.mark.parametrize("layout,cfg", [("reference", {}), ("huggan", {}), ("reference", {"upsample": "resize"}),
                                        ("reference", {"channel_dropout": True}),
                                        ("reference", {"channel_dropout": True, "dropout_levels": 4}),
                                        ("reference", {"channel_dropout": True, "dropout_levels": 4, "dropout_p": 0.4})])
def test_onnx_equals_torch_for_seeded_samples(layout, cfg):
    torch_r, onnx_r = pair(layout, **cfg)
    size = 64 if layout == "reference" else 256
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    a, b = masked_outputs(torch_r, onnx_r, x, seed=11, n=3)
    if layout == "reference":  # at num_downs 6 the reference's levels are one
        assert len(DropoutPlan.of(onnx_r.generator)) == cfg.get("dropout_levels", 1)
    assert set(DropoutPlan.of(onnx_r.generator).probs) == {cfg.get("dropout_p", 0.5)}  # each layer's own rate
    assert a.shape == b.shape == (3, 3, size, size)
    assert (a - b).abs().max().item() < 1e-4
    assert (a[0] - a[1]).abs().mean().item() > 1e-3  # the samples really differ: masks are in play


def test_onnx_images_equal_torch_images(renderers, edge_map):
    torch_r, onnx_r = renderers
    for deterministic in (False, True):
        a = torch_r.generate(edge_map, n=3, seed=4, deterministic=deterministic)
        b = onnx_r.generate(edge_map, n=3, seed=4, deterministic=deterministic)
        assert len(a) == len(b) == 3
        for i, j in zip(a, b):
            assert i.shape == j.shape == (64, 64, 3)
            assert np.abs(i.astype(int) - j.astype(int)).max() <= 1


def test_deterministic_is_masks_of_ones_and_equals_dropout_off(renderers):
    torch_r, onnx_r = renderers
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.inference_mode():
        a = torch_r._forward(x, [0], seed=0, sampled=False)
        b = onnx_r._forward(x, [0], seed=0, sampled=False)
        sampled = onnx_r._forward(x, [0], seed=0, sampled=True)
    assert (a - b).abs().max().item() < 1e-4
    assert (a - sampled).abs().max().item() > 1e-3


def test_masks_are_drawn_like_seeded_dropout():
    g = tiny_generator()
    plan = DropoutPlan.of(g)
    assert len(plan) == 1 and plan.channels == [64] and plan.strides == [(16, 16)]
    drawn: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep_mask(m, args, out):
        drawn.append((args[0], out))

    for m in g.modules():
        if isinstance(m, SeededDropout):
            m.register_forward_hook(keep_mask)
    with torch.no_grad():
        seeded_forward(g, torch.zeros(2, 3, 128, 64), [5, 6])
    masks = plan.draw([5, 6], 128, 64)
    assert masks[0].shape == (2, 64, 8, 4)
    assert set(masks[0].unique().tolist()) == {0.0, 2.0}
    x_in, x_out = drawn[-1]  # the seeded forward's own pass (after the plan's probe)
    assert torch.equal(x_out, x_in * masks[0])  # bit for bit what eager SeededDropout computed


def test_onnx_batch_equals_one_by_one(renderers, edge_map):
    _, onnx_r = renderers
    batched = onnx_r.generate(edge_map, n=4, seed=3)
    singles = onnx_r.generate(edge_map, n=4, seed=3, batch_size=1)
    for b, s in zip(batched, singles):
        assert np.abs(b.astype(int) - s.astype(int)).max() <= 1


def test_onnx_odd_size(renderers):
    torch_r, onnx_r = renderers
    img = np.full((200, 300), 255, np.uint8)
    img[60:64, 20:280] = 0
    img[20:180, 150:153] = 0
    a = torch_r.generate(img, n=2, seed=9)
    b = onnx_r.generate(img, n=2, seed=9)
    assert [o.shape for o in b] == [(200, 300, 3)] * 2
    for i, j in zip(a, b):
        assert np.abs(i.astype(int) - j.astype(int)).max() <= 1


def test_export_is_cached_by_weights(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(fast.CACHE_ENV, str(folder))
    g = tiny_generator()
    Renderer(g, INFO, device="cpu", backend="onnx")
    files = list(folder.glob("*.onnx"))
    assert len(files) == 1 and files[0].stem == fast.weights_key(g)
    with torch.no_grad():
        next(g.parameters()).add_(1.0)  # other weights, another file
    Renderer(g, INFO, device="cpu", backend="onnx")
    assert len(list(folder.glob("*.onnx"))) == 2


def test_auto_falls_back_to_torch_without_onnxruntime(monkeypatch, edge_map, caplog):
    monkeypatch.setattr(fast, "onnxruntime_available", lambda: False)
    r = Renderer(tiny_generator(), INFO, device="cpu")
    assert r.backend == "torch"
    assert len(r.generate(edge_map, n=2, seed=1)) == 2


def test_auto_falls_back_to_torch_when_export_fails(monkeypatch, edge_map, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter says no")

    monkeypatch.setattr(fast, "export_onnx", broken)
    monkeypatch.setenv(fast.CACHE_ENV, "off")
    with caplog.at_level("WARNING", logger="p2p_demo.render"):
        r = Renderer(tiny_generator(), INFO, device="cpu")
    assert r.backend == "torch"
    assert "exporter says no" in caplog.text
    forced = pytest.raises(RuntimeError, match="exporter says no")
    with forced:
        Renderer(tiny_generator(), INFO, device="cpu", backend="onnx")


def test_backend_is_validated():
    with pytest.raises(ValueError, match="backend must be"):
        Renderer(tiny_generator(), INFO, device="cpu", backend="tensorrt")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        Renderer(tiny_generator(), INFO, device="cpu", backend="cuda-graph")


def test_export_onnx_cli_writes_a_loadable_file(tmp_path, capsys):
    import onnx
    import onnxruntime as ort

    from p2p_demo.__main__ import main
    from p2p_demo.hub import save_pretrained

    folder = tmp_path / "tiny"
    save_pretrained(tiny_generator(), folder, line_style={"size": 64}, name="tiny", dtype=torch.float32)
    out = tmp_path / "tiny.onnx"
    assert main(["export-onnx", "--model", str(folder), "--out", str(out)]) == 0
    assert "mask0" in capsys.readouterr().out
    model = onnx.load(out)
    onnx.checker.check_model(model)
    assert "InstanceNormalization" in {n.op_type for n in model.graph.node}  # per-image statistics
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["x", "mask0"]
    (y,) = sess.run(None, {"x": np.zeros((2, 3, 128, 64), np.float32),
                           "mask0": np.ones((2, 64, 8, 4), np.float32)})
    assert y.shape == (2, 3, 128, 64) and np.abs(y).max() <= 1.0


def test_cuda_out_of_memory_retries_smaller_batches_then_the_cpu(monkeypatch, edge_map):
    """The OOM path, simulated on the CPU: halve the batch down to 1, then render on the CPU."""
    r = Renderer(tiny_generator(), INFO, device="cpu", backend="torch")
    want = r.generate(edge_map, n=4, seed=2)
    real = Renderer(tiny_generator(), INFO, device="cpu", backend="torch")._forward  # the "GPU" that works
    calls: list[int] = []
    limit = {"batch": 1}

    def fake(x, ks, *, seed, sampled):
        calls.append(len(ks))
        if len(ks) > limit["batch"]:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(x, ks, seed=seed, sampled=sampled)

    monkeypatch.setattr(r, "_forward", fake)
    monkeypatch.setattr(r, "device", torch.device("cuda"))  # only read, never used to allocate here
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)  # a CPU build has no CUDA to free
    got = r.generate(edge_map, n=4, seed=2)
    assert calls == [4, 2, 1, 1, 1, 1]
    assert any("retrying 2 at a time" in n for n in r.notes)
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(want, got))

    limit["batch"] = 0  # not even one sample fits: the rest goes to a CPU copy of the model
    got = r.generate(edge_map, n=4, seed=2)
    assert any("on the CPU" in n for n in r.notes)
    assert len(got) == 4
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(want, got))


def test_importing_touches_no_cuda():
    import subprocess
    import sys

    code = ("import torch, p2p_demo.fast, p2p_demo.render, p2p_demo.nets; "
            "assert not torch.cuda.is_initialized(); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
