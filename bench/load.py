"""Load test: many gradio_client users calling /render at once; every call must be answered.

    python -m bench.load [--users 50] [--calls 20] [--samples 1] [--url URL]
                         [--weights-dir DIR] [--model ID] [--timeout 120] [--hostile USERS]

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

``--hostile USERS`` runs the storm three times against the same app: as above; with USERS more
normal users (what any extra calls cost, as the app renders one call at a time); and with USERS
more users sending, in turn, small files with absurd sizes (tests/hostile.py: a 58 kB
1 x 30,000,000 PNG, a 12 kB 6300 x 6300 one, a 37 kB 13000 x 13000 one, a 20000 x 20000 bomb) and
a text file named .png. Such a call ends as *refused* (a one-line message) or *busy*; anything
else (it rendered, an empty error, no answer) is *failed*. The normal calls' p50 / p95 of the storms are printed side by side,
with the app's resident memory (VmRSS, and its peak VmHWM) before and after, when the app runs here.
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
    status: str  # ok | busy | failed | refused (a hostile file, answered with a message)
    seconds: float
    error: str = ""
    hostile: bool = False


@dataclass
class LoadResult:
    users: int
    calls_per_user: int
    wall_s: float
    calls: list[Call] = field(default_factory=list)

    def count(self, status: str, hostile: bool | None = None) -> int:
        return sum(c.status == status and hostile in (None, c.hostile) for c in self.calls)

    def latency(self, q: float, status: str = "ok") -> float:
        return percentile([c.seconds for c in self.calls if c.status == status], q)

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


def hostile_once(client, image: str, *, timeout: float, model: str | None = None) -> tuple[str, str]:
    """One /render call with a file that must be refused: ("refused" | "busy" | "failed", text)."""
    from concurrent.futures import TimeoutError as FutureTimeout

    from gradio_client import handle_file

    job = client.submit(handle_file(image), model, 1, 0, False, "auto", api_name="/render")
    try:
        job.result(timeout=timeout)
    except FutureTimeout:
        job.cancel()
        return "failed", f"no answer in {timeout:.0f} s"
    except Exception as e:
        text = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        if BUSY in text:
            return "busy", text
        message = str(e).strip()
        return ("refused", "") if message and message != "None" and "\n" not in message else ("failed", text)
    return "failed", f"{Path(image).name} rendered"


def hostile_files(folder: Path) -> list[str]:
    """The files of --hostile, written into ``folder``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from hostile import HUGE, THIN, png_blank, png_bomb

    cases = {"thin.png": png_blank(*THIN), "huge.png": png_blank(*HUGE), "huger.png": png_blank(13000, 13000),
             "bomb.png": png_bomb(), "text.png": b"this is not an image at all\n" * 20}
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in cases.items():
        (folder / name).write_bytes(data)
    return [str(folder / name) for name in cases]


def rss_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) memory of a local process in MB, from /proc (Linux)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def run_load(url: str, *, users: int, calls: int, image: str, model: str | None = None, samples: int = 1,
             timeout: float = 120.0, download_dir: str | os.PathLike | None = None,
             hostile_users: int = 0, hostile: list[str] = ()) -> LoadResult:
    """``users`` threads, each with its own client, make ``calls`` /render calls; all start together.
    ``hostile_users`` more make ``calls`` calls each with the ``hostile`` files in turn."""
    from gradio_client import Client

    root = Path(download_dir if download_dir is not None else tempfile.mkdtemp(prefix="p2p-load-"))
    result = LoadResult(users, calls, 0.0)
    lock = threading.Lock()
    ready = threading.Barrier(users + hostile_users + 1)

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
            if k < users:
                status, error = render_once(client, image, seed=k * calls + j, samples=samples, timeout=timeout,
                                            model=model)
            else:
                status, error = hostile_once(client, hostile[(k + j) % len(hostile)], timeout=timeout, model=model)
            with lock:
                result.calls.append(Call(k, j, status, time.perf_counter() - t0, error, hostile=k >= users))
        client.close()

    threads = [threading.Thread(target=user, args=(k,), daemon=True) for k in range(users + hostile_users)]
    for t in threads:
        t.start()
    ready.wait()  # every client is connected: start the storm
    t0 = time.perf_counter()
    deadline = t0 + timeout * (calls + 1)
    for t in threads:
        t.join(max(0.0, deadline - time.perf_counter()))
    result.wall_s = time.perf_counter() - t0
    return result


def report(result: LoadResult, recovery: tuple[str, float, str] | None = None, notes: list[str] = (),
           earlier: list[LoadResult] = ()) -> str:
    """The table: a row for each ``earlier`` storm (run against the same app), then ``result``."""
    rows, notes = [], list(notes)
    for r in [*earlier, result]:
        hostile_users = len({c.user for c in r.calls if c.hostile})
        total = (r.users + hostile_users) * r.calls_per_user
        what = f"{r.users} x {r.calls_per_user}" + (f" + {hostile_users} hostile x {r.calls_per_user}"
                                                     if hostile_users else "")
        rows.append([what, total, r.count("ok"), r.count("busy"), r.count("refused"),
                     r.count("failed") + (total - r.answered), r.latency(0.5), r.latency(0.95), r.latency(1.0),
                     r.wall_s])
        if total != r.answered:
            notes.append(f"{what}: {total - r.answered} calls never returned (counted as failed)")
        if hostile_users:
            notes.append(f"hostile calls: {r.count('refused')} refused with a message in p50 {r.latency(0.5, 'refused'):.2f}"
                         f" / p95 {r.latency(0.95, 'refused'):.2f} / max {r.latency(1.0, 'refused'):.2f} s, "
                         f"{r.count('busy', hostile=True)} busy, {r.count('failed', hostile=True)} failed")
    for error, n in sum((r.failures() for r in [*earlier, result]), Counter()).most_common(5):
        notes.append(f"failed x{n}: {error}")
    if recovery is not None:
        status, seconds, error = recovery
        notes.append(f"one call right after: {status} in {seconds:.2f} s" + (f" ({error})" if error else ""))
    return table("/render under load (latency of the ok calls, seconds)",
                 ["users x calls", "calls", "ok", "busy", "refused", "failed", "p50", "p95", "max", "wall"],
                 rows, notes)


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

    from bench.chromium import free_port

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
    ap.add_argument("--hostile", type=int, default=0, metavar="USERS",
                    help="run the storm again with USERS more users sending hostile files (see above)")
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
            client = Client(url, verbose=False, download_files=str(Path(downloads) / "after"),
                            httpx_kwargs={"timeout": args.timeout})
            earlier, memory = [], []
            if proc is not None:  # the app's memory once it has rendered, before any storm
                render_once(client, image, seed=0, samples=args.samples, timeout=args.timeout, model=model)
                memory.append(("before", *rss_mb(proc.pid)))
            load = dict(calls=args.calls, image=image, model=model, samples=args.samples, timeout=args.timeout,
                        download_dir=downloads)
            result = run_load(url, users=args.users, **load)
            if args.hostile:
                # The same storm with as many more normal users (what any extra calls cost), then
                # with the hostile users instead.
                earlier = [result, run_load(url, users=args.users + args.hostile, **load)]
                if proc is not None:
                    memory.append(("after the normal storms", *rss_mb(proc.pid)))
                result = run_load(url, users=args.users, hostile_users=args.hostile,
                                  hostile=hostile_files(Path(downloads) / "hostile"), **load)
            t0 = time.perf_counter()
            status, error = render_once(client, image, seed=0, samples=args.samples, timeout=args.timeout,
                                        model=model)
            recovery = (status, time.perf_counter() - t0, error)
            if proc is not None:
                time.sleep(2.0)  # let the last request's buffers go
                memory.append(("after" + (" the hostile storm" if args.hostile else ""), *rss_mb(proc.pid)))
            notes += [f"app memory {when}: RSS {rss:.0f} MB (peak so far {peak:.0f} MB)" for when, rss, peak in memory]
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    notes.append(f"input {Path(image).name}, n={args.samples}, timeout {args.timeout:.0f} s per call")
    argv = sys.argv[1:] if argv is None else argv
    print(report(result, recovery, notes, earlier).replace(f"command: {command()}",
                                                           "command: python -m bench.load " + shlex.join(argv)))
    expected = [(r, r.users + (args.hostile if r is result and args.hostile else 0)) for r in [*earlier, result]]
    failed = sum(r.count("failed") + users * args.calls - r.answered for r, users in expected)
    return 1 if failed or recovery[0] != "ok" else 0


if __name__ == "__main__":
    sys.exit(main())
