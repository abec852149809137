"""Load test: many gradio_client users calling /render at once; every call must be answered.

    python -m bench.load [--users 50] [--calls 20] [--samples 1] [--url URL]
                         [--weights-dir DIR] [--model ID] [--timeout 120]

Without ``--url`` the app (``python app.py``, as deployed: queue of 16, one render at a time) is
started in a subprocess on 127.0.0.1 with the registry's default model, or a random stand-in with
the default model's architecture when none is installed (as ``bench.app_latency``). Each user is a
thread with its own ``gradio_client.Client`` (and download folder) making ``--calls`` calls one
after the other, all users at once. A call ends as

* ok: the images came back and decode;
* busy: the app said its queue is full ("Queue is full! Please try again."): a clear answer;
* failed: anything else, including no answer within ``--timeout`` seconds (a hang).

Printed: calls, ok, busy, failed, p50 / p95 / max latency of the ok calls, wall time; then one
more call after the storm, which must succeed at once (the app recovers). Exit status 1 when a
call failed or the last call did not succeed. tests/test_reliability.py runs a small version.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import command, percentile, table  # noqa: E402

BUSY = "Queue is full"


@dataclass
class Call:
    user: int
    index: int
    status: str  # ok | busy | failed
    seconds: float
    error: str = ""


@dataclass
class LoadResult:
    users: int
    calls_per_user: int
    wall_s: float
    calls: list[Call] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.calls)

    def latency(self, q: float) -> float:
        return percentile([c.seconds for c in self.calls if c.status == "ok"], q)

    @property
    def answered(self) -> int:
        return len(self.calls)

    def failures(self) -> Counter:
        return Counter(c.error for c in self.calls if c.status == "failed")


def render_once(client, image: str, *, seed: int, samples: int, timeout: float, model: str | None = None,
                edges: str = "auto") -> tuple[str, str]:
    """One /render call: ("ok" | "busy" | "failed", error text)."""
    from concurrent.futures import TimeoutError as FutureTimeout

    from gradio_client import handle_file
    from PIL import Image

    job = client.submit(handle_file(image), model, samples, seed, False, edges, api_name="/render")
    try:
        out_image, gallery, edge_map, status, timings = job.result(timeout=timeout)
    except FutureTimeout:
        job.cancel()
        return "failed", f"no answer in {timeout:.0f} s"
    except Exception as e:  # gradio_client raises QueueError (a plain Exception) when the queue is full
        text = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        return ("busy" if BUSY in text else "failed"), text
    try:  # the files came back whole
        for path in [out_image, edge_map, *(g["image"] for g in gallery)]:
            Image.open(path).load()
    except Exception as e:
        return "failed", f"broken output: {type(e).__name__}: {e}"[:200]
    return "ok", ""


def run_load(url: str, *, users: int, calls: int, image: str, model: str | None = None, samples: int = 1,
             timeout: float = 120.0, download_dir: str | os.PathLike | None = None) -> LoadResult:
    """``users`` threads, each with its own client, make ``calls`` /render calls; all start together."""
    from gradio_client import Client

    root = Path(download_dir if download_dir is not None else tempfile.mkdtemp(prefix="p2p-load-"))
    result = LoadResult(users, calls, 0.0)
    lock = threading.Lock()
    ready = threading.Barrier(users + 1)

    def user(k: int) -> None:
        try:
            client = Client(url, verbose=False, download_files=str(root / f"user{k}"),
                            httpx_kwargs={"timeout": timeout})
        except Exception as e:
            with lock:
                result.calls += [Call(k, j, "failed", 0.0, f"connect: {type(e).__name__}: {e}"[:200])
                                 for j in range(calls)]
            ready.wait()
            return
        ready.wait()
        for j in range(calls):
            t0 = time.perf_counter()
            status, error = render_once(client, image, seed=k * calls + j, samples=samples, timeout=timeout,
                                        model=model)
            with lock:
                result.calls.append(Call(k, j, status, time.perf_counter() - t0, error))
        client.close()

    threads = [threading.Thread(target=user, args=(k,), daemon=True) for k in range(users)]
    for t in threads:
        t.start()
    ready.wait()  # every client is connected: start the storm
    t0 = time.perf_counter()
    deadline = t0 + timeout * (calls + 1)
    for t in threads:
        t.join(max(0.0, deadline - time.perf_counter()))
    result.wall_s = time.perf_counter() - t0
    return result


def report(result: LoadResult, recovery: tuple[str, float, str] | None = None, notes: list[str] = ()) -> str:
    total = result.users * result.calls_per_user
    rows = [[f"{result.users} x {result.calls_per_user}", total, result.count("ok"), result.count("busy"),
             result.count("failed") + (total - result.answered), result.latency(0.5), result.latency(0.95),
             result.latency(1.0), result.wall_s]]
    notes = list(notes)
    if total != result.answered:
        notes.append(f"{total - result.answered} calls never returned (counted as failed)")
    for error, n in result.failures().most_common(5):
        notes.append(f"failed x{n}: {error}")
    if recovery is not None:
        status, seconds, error = recovery
        notes.append(f"one call right after: {status} in {seconds:.2f} s" + (f" ({error})" if error else ""))
    return table("/render under load (latency of the ok calls, seconds)",
                 ["users x calls", "calls", "ok", "busy", "failed", "p50", "p95", "max", "wall"], rows, notes)


def default_model(url: str) -> str:
    """The model /render uses when a call names none: the Model dropdown's value."""
    from gradio_client import Client

    api = Client(url, verbose=False).view_api(return_format="dict", print_info=False)
    params = {p["parameter_name"]: p for p in api["named_endpoints"]["/render"]["parameters"]}
    return params["model"]["parameter_default"]


def start_app(weights_dir: Path | None, model: str | None, timeout: float = 600.0
              ) -> tuple[subprocess.Popen, str, str]:
    """``python app.py`` on a free loopback port; the process, its URL (once it answers) and its log file."""
    import httpx

    from bench.app_latency import free_port

    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    if weights_dir is not None:
        env["P2P_WEIGHTS_DIR"] = str(weights_dir)
    if model is not None:
        env["P2P_DEFAULT_MODEL"] = model
    log = tempfile.NamedTemporaryFile("w+", prefix="p2p-load-app-", suffix=".log", delete=False)
    # The app's log goes to a file: a pipe nobody reads would fill up and stall the server.
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited ({proc.returncode}): {Path(log.name).read_text()[-2000:]}")
        try:
            if httpx.get(url + "config", timeout=5).status_code == 200:
                return proc, url, log.name
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the app did not answer on {url} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--calls", type=int, default=20, help="calls per user, one after the other")
    ap.add_argument("--samples", type=int, default=1, help="samples per call (n)")
    ap.add_argument("--url", default=None, help="a running app (default: start app.py here)")
    ap.add_argument("--weights-dir", type=Path, default=None)
    ap.add_argument("--model", default=None, help="registry id (default: the app's default model)")
    ap.add_argument("--image", default=None, help="the file every call uploads (default: the cat example)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds one call may take before it is a hang")
    args = ap.parse_args(argv)

    from p2p_demo.examples import example_paths

    image = args.image or str(example_paths()[0])
    proc, notes = None, []
    model = args.model
    if args.url:
        url = args.url if args.url.endswith("/") else args.url + "/"
        model = model or default_model(url)
        notes.append(f"app at {url}, model {model}")
    else:
        from bench.app_latency import pick_model

        weights_dir, model, note = pick_model(args.weights_dir, args.model)
        proc, url, log = start_app(weights_dir, model)
        notes.append(f"app.py in a subprocess (queue 16, one render at a time), model {note}; its log: {log}")
    try:
        from gradio_client import Client

        with tempfile.TemporaryDirectory(prefix="p2p-load-") as downloads:
            result = run_load(url, users=args.users, calls=args.calls, image=image, model=model,
                              samples=args.samples, timeout=args.timeout, download_dir=downloads)
            client = Client(url, verbose=False, download_files=str(Path(downloads) / "after"),
                            httpx_kwargs={"timeout": args.timeout})
            t0 = time.perf_counter()
            status, error = render_once(client, image, seed=0, samples=args.samples, timeout=args.timeout,
                                        model=model)
            recovery = (status, time.perf_counter() - t0, error)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    notes.append(f"input {Path(image).name}, n={args.samples}, timeout {args.timeout:.0f} s per call")
    argv = sys.argv[1:] if argv is None else argv
    print(report(result, recovery, notes).replace(f"command: {command()}",
                                                  "command: python -m bench.load " + shlex.join(argv)))
    failed = result.count("failed") + (args.users * args.calls - result.answered)
    return 1 if failed or recovery[0] != "ok" else 0


if __name__ == "__main__":
    sys.exit(main())
