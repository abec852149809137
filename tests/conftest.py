"""Builders and fixtures shared by several test files: tiny seeded models, the app on 127.0.0.1, a
Hub cache, tiny prepared datasets and training runs. Test files import the builders from here
(``from conftest import ...``), never from one another."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from p2p_demo.edges import LineStyle, apply_box, photo_to_edges
from p2p_demo.examples import example_paths
from p2p_demo.hub import save_pretrained
from p2p_demo.image import resize
from p2p_demo.nets import GeneratorConfig, build_generator
from train.config import TrainConfig
from train.discriminator import init_weights
from train.dataset import PairedData
from train.trainer import Trainer

SIZE = 64  # the tiny models' and datasets' side: inputs are framed and resized to 64x64
MODELS = ("tiny-cats", "tiny-shoes")
OFFLINE = "offline-hub"
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the fake Hub cache's revision


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def edge_map() -> np.ndarray:
    """A 64x64 edge map (black strokes on white) drawn from a fixed seed."""
    rng = np.random.default_rng(0)
    img = np.full((64, 64), 255, np.uint8)
    for _ in range(12):
        y, x = rng.integers(4, 60, 2)
        img[y : y + 2, x : x + 20] = 0
    return img


@pytest.fixture
def one_thread():
    """One intra-op thread: on a small shared CPU, two spinning OpenMP threads per test run slower.
    Training test files use it for every test (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny prepared dataset in the contract format (``make_dataset``)."""
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny")


# ---------------------------------------------------------------------------------------------
# The app: tiny seeded models in a weights folder, the real app on 127.0.0.1


def tiny_generator(layout: str = "reference", seed: int = 0, **cfg) -> torch.nn.Module:
    """A tiny seeded generator: the reference U-Net at ngf 8 with a 1x1 bottleneck at 64 px, or
    the Hub's layout at ngf 4."""
    torch.manual_seed(seed)
    if layout == "huggan":
        config = GeneratorConfig(ngf=4, layout="huggan", norm="instance", **cfg)
    else:
        config = GeneratorConfig(ngf=8, num_downs=6, **cfg)
    g = build_generator(config)
    init_weights(g)
    return g


def trained_like(config: GeneratorConfig, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """A generator with weights far from their init (so a wrong copy or conversion shows)."""
    torch.manual_seed(seed)
    G = build_generator(config)
    with torch.no_grad():
        for p in G.parameters():
            p.normal_(0, std)
    return G


def make_weights(root: Path, size: int = SIZE) -> Path:
    """A weights folder with two tiny seeded models and a Hub entry nobody can download."""
    entries = []
    for i, mid in enumerate(MODELS):
        save_pretrained(tiny_generator(seed=i), root / mid, line_style=LineStyle(size=size, stroke_width=2), name=f"Tiny {mid[5:]}",
                        description="A tiny random model for tests", expects="black lines on white",
                        license="MIT", dtype=torch.float32)
        entries.append({"id": mid, "source": "bundled", "folder": mid})
    entries.append({"id": OFFLINE, "source": "hub", "repo_id": "p2p-demo-tests/no-such-model", "name": "Offline model",
                    "expects": "edges", "license": "mit", "size_mb": 1,
                    "generator": GeneratorConfig(ngf=8, num_downs=6).to_dict()})
    (root / "registry.json").write_text(json.dumps({"models": entries}))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(weights_dir: Path, default_model: str = MODELS[0], **build_kwargs):
    """The real app on 127.0.0.1, offline for the Hub; yields the running Blocks."""
    import huggingface_hub.constants

    import app
    from p2p_demo import gradio_glue as glue

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        demo = app.build_app(weights_dir, default_model=default_model, **build_kwargs)
        glue.launch(demo, server_name="127.0.0.1", server_port=free_port(),
                    prevent_thread_lock=True, quiet=True)
        try:
            yield demo
        finally:
            demo.close()


@contextlib.contextmanager
def serve(weights_dir: Path, **build_kwargs) -> Iterator[str]:
    """``running_app`` with the first tiny model; yields its URL."""
    with running_app(weights_dir, **build_kwargs) as demo:
        yield demo.local_url


CAT = str(example_paths()[0])


def render(client, path, *, model=MODELS[0], n=1, seed=0, deterministic=False, edges="auto"):
    from gradio_client import handle_file

    image, gallery, edge_map, status, timings = client.predict(
        handle_file(str(path)), model, n, seed, deterministic, edges, api_name="/render")
    return {
        "image": np.asarray(Image.open(image)),
        "samples": [np.asarray(Image.open(g["image"])) for g in gallery],
        "edges": np.asarray(Image.open(edge_map)),
        "status": status,
        "timings": timings,
    }


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


# ---------------------------------------------------------------------------------------------
# The Hub: its cache layout, a pickle that runs code


def put_in_hf_cache(hub_cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> None:
    """Write files the way hf_hub_download stores them: blobs, refs/main, snapshot symlinks."""
    repo = hub_cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))


class RunsCode:
    """A pickle payload: unpickling it would execute code that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


# ---------------------------------------------------------------------------------------------
# Training: a tiny prepared dataset of real photos, tiny runs and trainers


def make_dataset(folder: Path, size: int = SIZE, n_train: int = 12, n_test: int = 4, seed: int = 0) -> Path:
    """A prepared dataset in the contract format: square crops of skimage photos + their edges."""
    from skimage import data as skd

    style = LineStyle.for_size(size, margin=0.0)
    photos = [skd.astronaut(), skd.chelsea(), skd.coffee(), skd.rocket()]
    rng = np.random.default_rng(seed)
    A, B = [], []
    while len(A) < n_train + n_test:
        p = photos[len(A) % len(photos)]
        h, w = p.shape[:2]
        side = int(rng.integers(min(h, w) // 3, min(h, w)))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        square = resize(np.ascontiguousarray(p[y : y + side, x : x + side]), 4 * size)
        em = photo_to_edges(square, method="canny", style=style)
        A.append(em.image)
        B.append(apply_box(square, em.box, size))
    folder.mkdir(parents=True, exist_ok=True)
    for split, part in (("train", slice(0, n_train)), ("test", slice(n_train, None))):
        a, b = np.stack(A[part]), np.stack(B[part])
        np.savez(folder / f"{split}.npz", A=a, B=b, names=np.array([f"{split}{i}" for i in range(len(a))]),
                 groups=np.array(["photo"] * len(a)), annotations=np.array([""] * len(a)))
    manifest = {"format": "p2p_demo.prepared", "format_version": 1, "source": "skimage.data",
                "licence": "BSD-3-Clause", "input": "edges", "line_style": style.to_dict(), "size": size,
                "channels": 3, "counts": {"train": n_train, "test": n_test}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def tiny(data_dir: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(data_dir), out_dir=str(out), name="run", ngf=8, ndf=8, batch_size=2, n_epochs=1.0,
                n_epochs_decay=1.0, checkpoint_every=0, sample_every=0, log_every=2, final_eval=False,
                progress=False, device="cpu")
    return TrainConfig.from_dict({**base, **kw})


def make_trainer(cfg: TrainConfig, size: int = SIZE, spe: int = 10) -> Trainer:
    return Trainer(cfg, cfg.generator.resolve(size=size, channels=3), device=torch.device("cpu"),
                   steps_per_epoch=spe)


def fixed_batch(data_dir: Path, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return PairedData.load(data_dir, "train").pairs(torch.arange(n), 3)
