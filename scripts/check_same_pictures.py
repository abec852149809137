"""Fingerprint the pictures every bundled model gives, to prove a refactor changed none of them.

For each bundled model in weights/, each example drawing in p2p_demo/examples, seeds 0, 1 and 7
(n=3 samples each, plus the deterministic rendering) and the torch and onnx backends, the sha256
of the edge map the generator saw and of each output array goes into one JSON file:

    python scripts/check_same_pictures.py before.json   # on the old commit
    python scripts/check_same_pictures.py after.json    # on the new one
    cmp before.json after.json

The ONNX export is made afresh (P2P_ONNX_CACHE=off), so a cached file from the old code cannot
hide a change in the export.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ["P2P_ONNX_CACHE"] = "off"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from p2p_demo.examples import example_paths  # noqa: E402
from p2p_demo.render import Renderer  # noqa: E402

SEEDS = (0, 1, 7)
N = 3
BACKENDS = ("torch", "onnx")


def sha(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.dtype} {a.shape} ".encode() + a.tobytes()).hexdigest()


def bundled_ids() -> list[str]:
    try:
        from p2p_demo.registry import list_models
    except ImportError:  # before the registry had its own module
        from p2p_demo.hub import list_models
    return [m.id for m in list_models() if m.source == "bundled" and m.available]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the JSON file to write")
    args = ap.parse_args()
    result: dict[str, dict] = {}
    for model in bundled_ids():
        for backend in BACKENDS:
            r = Renderer.load(model, device="cpu", backend=backend)
            assert r.backend == backend, (model, backend, r.backend)
            for path in example_paths():
                key = f"{model}/{backend}/{path.name}"
                entry: dict[str, object] = {}
                for seed in SEEDS:
                    out = r(path, n=N, seed=seed)
                    entry["edges"] = sha(out.edges)
                    entry[f"seed{seed}"] = [sha(im) for im in out.images]
                entry["deterministic"] = sha(r(path, n=1, seed=0, deterministic=True).images[0])
                result[key] = entry
                print(key, entry["seed0"][0][:12], flush=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"{len(result)} entries -> {args.out}")


if __name__ == "__main__":
    main()
