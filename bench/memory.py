"""Resident memory of the running app: ``python app.py`` in a subprocess, one render, /proc.

    python -m bench memory [--samples 1 4] [--timeout 180]

Starts the real app (GRADIO_ANALYTICS_ENABLED=False, a free port on 127.0.0.1) with the default
model (or, while no bundled model is installed, the default architecture with random weights in a
temporary weights folder), waits until it serves, renders a drawing through ``gradio_client``'s
/render for each sample count, reads VmRSS and VmHWM from /proc/<pid>/status, and stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .common import DEFAULT_ARCH, ROOT, table

GOAL_MB = 1024.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS / VmHWM of a process (and its children's RSS, if any), in MB."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) / 1024
    return out


def weights_for_app(folder: Path) -> tuple[str | None, str]:
    """(P2P_WEIGHTS_DIR or None, a note): the default model, or a stand-in with its architecture."""
    from p2p_demo import hub, registry

    if any(m.available and m.source == "bundled" for m in registry.list_models()):
        return None, "the registry's default bundled model"
    import torch

    from p2p_demo.edges import LineStyle
    from p2p_demo.nets import GeneratorConfig, build_generator
    from train.discriminator import init_weights

    torch.manual_seed(0)
    g = build_generator(GeneratorConfig(**DEFAULT_ARCH))
    init_weights(g)
    hub.save_pretrained(g, folder / "stand-in", line_style=LineStyle(), name="default architecture (random weights)",
                        license="MIT")
    (folder / "registry.json").write_text(json.dumps({"models": [{"id": "stand-in", "source": "bundled"}]}))
    desc = ", ".join(f"{k}={v}" for k, v in DEFAULT_ARCH.items())
    return str(folder), f"stand-in: no bundled model installed yet, so the default architecture ({desc}), random weights"


def wait_until_serving(url: str, proc: subprocess.Popen, timeout: float) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with status {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"app.py did not serve {url} within {timeout:.0f} s")


def run(samples: list[int], timeout: float = 180.0) -> str:
    from gradio_client import Client, handle_file

    from p2p_demo.examples import example_paths

    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        weights_dir, note = weights_for_app(Path(tmp))
        port = free_port()
        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", GRADIO_SERVER_NAME="127.0.0.1",
                   GRADIO_SERVER_PORT=str(port), PYTHONUNBUFFERED="1")
        if weights_dir:
            env["P2P_WEIGHTS_DIR"] = weights_dir
        log_path = Path(tmp) / "app.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        try:
            started = wait_until_serving(url, proc, timeout)
            mem = proc_status(proc.pid)
            rows.append(("started, model loaded and warmed", "-", mem["VmRSS"], mem["VmHWM"], f"{started:.1f} s"))
            client = Client(url, verbose=False)
            drawing = handle_file(str(example_paths()[0]))
            for n in samples:
                t0 = time.perf_counter()
                out = client.predict(drawing, _default_model(weights_dir), n, 0, False, "sketch", api_name="/render")
                took = time.perf_counter() - t0
                mem = proc_status(proc.pid)
                rows.append((f"after /render, {n} sample{'s' * (n > 1)}", n, mem["VmRSS"], mem["VmHWM"], f"{took:.2f} s"))
                timings = out[-1] if isinstance(out, (list, tuple)) else {}
                if isinstance(timings, dict) and "device" in timings:
                    notes.append(f"/render {n}: model {timings.get('model', 0) * 1000:.0f} ms on {timings['device']}")
        except Exception:
            print(log_path.read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    hwm = max(r[3] for r in rows)
    notes.insert(0, f"app: {note}")
    notes.append(f"goal: resident memory <= {GOAL_MB:.0f} MB: peak (VmHWM) {hwm:.0f} MB: "
                 f"{'met' if hwm <= GOAL_MB else 'NOT met'}")
    return table("App memory: python app.py, /proc/<pid>/status", ("moment", "samples", "VmRSS MB", "VmHWM MB", "time"),
                 rows, notes)


def _default_model(weights_dir: str | None) -> str:
    from p2p_demo import registry

    models = [m for m in registry.list_models(weights_dir) if m.available]
    bundled = [m for m in models if m.source == "bundled"]
    return (bundled or models)[0].id


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench memory", description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the app to serve")
    args = ap.parse_args(argv)
    print(run(args.samples, args.timeout))


if __name__ == "__main__":
    main()
