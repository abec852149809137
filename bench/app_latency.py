"""Latency of the live app: stroke -> image in a real browser, and /render through gradio_client.

This measures the server path (the page is opened with ``?render=server``); ``python -m bench.browser``
measures rendering in the browser.

    python -m bench.app_latency [--strokes 20] [--calls 30] [--samples 3] [--model ID]
                                [--weights-dir weights] [--screenshot docs/screenshots/app-openmoji.png]

Runs the real app in-process on 127.0.0.1 with the registry's default model (or --model), drives
Debian's Chromium (/usr/bin/chromium) through Playwright, and prints p50/p95 tables.

* stroke -> image: from the pointer's release on the canvas (``pointerup``, in the page's clock) to
  the ``load`` event of the new output image. Each stroke waits for the previous image.
* /render: one gradio_client call with a drawing file, wall time in the client.
* model: the generator's own time for that request (``RenderResult.timings["model"]``, shown in
  the app's status line and returned by /render); edges: the edge-map step before it; rest: all
  else (the canvas' PNG, the event, queue, decode, PNG encode, download, paint).

When no bundled model is installed, a randomly initialised generator with the default model's
architecture (``bench.common.DEFAULT_ARCH``; ``--stand-in-ngf 64`` for the reference's width)
stands in: the same compute as the trained model. The output says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("GRADIO_PROFILING", "1")  # gradio's own per-request phase timings, read in-process
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.chromium import CHROMIUM, CHROMIUM_ARGS, circle, free_port, stroke  # noqa: E402
from bench.common import percentile  # noqa: E402

# In the page: remember the last pointerup time and the time each new output image finished loading.
PAGE_PROBE = """
() => {
  window.__bench = {up: null, loads: []};
  performance.setResourceTimingBufferSize(100000);
  window.addEventListener('pointerup', () => { window.__bench.up = performance.now(); }, true);
  const watch = () => {
    const box = document.querySelector('#output');
    new MutationObserver(() => {
      const img = box.querySelector('img');
      if (!img || img.__watched === img.src) return;
      img.__watched = img.src;
      const src = img.src;
      const done = () => window.__bench.loads.push({src, t: performance.now(), up: window.__bench.up});
      if (img.complete && img.naturalWidth) done(); else img.addEventListener('load', done, {once: true});
    }).observe(box, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
  };
  watch();
}
"""


# Where a stroke's time goes, from the page's resource timings (same clock as pointerup):
# client = pointerup -> the event is sent (queue/join: the canvas' PNG travels inside it),
# server = until the output image is requested (includes the result message), image = until it loaded.
PHASES = """
(load) => {
  const rs = performance.getEntriesByType('resource').filter(r => r.startTime >= load.up);
  const join = rs.find(r => /queue\\/join/.test(r.name));
  const img = rs.find(r => r.name === load.src);
  if (!join || !img) return {};
  return {client: join.startTime - load.up, server: img.startTime - join.startTime, image: load.t - img.startTime};
}
"""


def pick_model(weights_dir: Path | None, model: str | None, stand_in_ngf: int | None = None
               ) -> tuple[Path | None, str | None, str]:
    """The weights folder and model to serve, and a note on what it is."""
    from p2p_demo import hub, registry

    listed = {m.id: m for m in registry.list_models(weights_dir) if m.available}
    if model:
        return weights_dir, model, f"{model} ({listed[model].source if model in listed else '?'})"
    bundled = [m for m in listed.values() if m.source == "bundled"]
    if bundled:
        return weights_dir, bundled[0].id, f"{bundled[0].id} (bundled)"
    # Nothing trained yet: same architecture and compute, random weights.
    import torch

    from bench.common import DEFAULT_ARCH
    from p2p_demo.edges import LineStyle
    from p2p_demo.nets import GeneratorConfig, build_generator
    from train.discriminator import init_weights

    arch = {**DEFAULT_ARCH, **({"ngf": stand_in_ngf} if stand_in_ngf else {})}
    tmp = Path(tempfile.mkdtemp(prefix="p2p-bench-"))
    torch.manual_seed(0)
    g = build_generator(GeneratorConfig(**arch))
    init_weights(g)
    what = ", ".join(f"{k} {v}" for k, v in arch.items())
    hub.save_pretrained(g, tmp / "stand-in", line_style=LineStyle(), name="Stand-in (random weights)",
                        description=f"the default model's architecture ({what}), random weights", license="MIT")
    (tmp / "registry.json").write_text(json.dumps({"models": [{"id": "stand-in", "source": "bundled"}]}))
    return tmp, "stand-in", f"stand-in (no bundled model installed): {what}, random weights"


# A cat's face as a person draws it with the mouse, in fractions of the canvas: head, two ears,
# two eyes, a nose, a mouth and whiskers (for --screenshot-example -1).
CAT_STROKES = [
    circle(0.5, 0.56, 0.27, n=36, squash=0.85),
    [(0.29, 0.42), (0.31, 0.16), (0.44, 0.33)],
    [(0.56, 0.33), (0.69, 0.16), (0.71, 0.42)],
    circle(0.41, 0.5, 0.035, n=12), circle(0.59, 0.5, 0.035, n=12),
    [(0.47, 0.6), (0.53, 0.6), (0.5, 0.64), (0.47, 0.6)],
    circle(0.455, 0.66, 0.045, n=8, start=0.2, end=math.pi - 0.2),
    circle(0.545, 0.66, 0.045, n=8, start=0.2, end=math.pi - 0.2),
    [(0.36, 0.6), (0.16, 0.56)], [(0.36, 0.64), (0.17, 0.67)],
    [(0.64, 0.6), (0.84, 0.56)], [(0.64, 0.64), (0.83, 0.67)],
]


def bench_browser(url: str, strokes: int, samples: int, screenshot: str | None,
                  screenshot_example: int = 0) -> list[dict]:
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.set_default_timeout(60_000)
        page.goto(url + "?render=server")  # the server path; python -m bench.browser measures the browser's
        box = page.locator("#samples input[type=number]")
        box.fill(str(samples))
        box.press("Enter")
        page.get_by_role("button", name="Brush", exact=True).click()
        page.evaluate(PAGE_PROBE)
        canvas = page.locator("#sketch canvas").first.bounding_box()
        for i in range(strokes + 1):  # the first stroke is a warm-up for the browser side
            fx, fy = 0.3 + 0.25 * ((i * 0.37) % 1), 0.25 + 0.4 * ((i * 0.61) % 1)
            pts = [(fx + dx, fy + dy) for dx, dy in [(0, 0), (0.05, 0.06), (0.1, 0.08), (0.14, 0.05)]]
            n_loads = page.evaluate("() => window.__bench.loads.length")
            stroke(page, canvas, pts)
            try:
                page.wait_for_function("n => window.__bench.loads.length > n", arg=n_loads)
            except Exception:
                print("stuck:", page.evaluate("() => window.__bench"), page.locator("#status").inner_text(), file=sys.stderr)
                page.screenshot(path="/tmp/bench-stuck.png")
                raise
            load = page.evaluate("() => window.__bench.loads[window.__bench.loads.length - 1]")
            phases = page.evaluate(PHASES, load)
            text = page.locator("#status").inner_text()
            m = re.search(r"model (\d+) ms, edges (\d+) ms", text)
            if i == 0 or m is None:
                continue
            rows.append({"total": (load["t"] - load["up"]) / 1000, "model": int(m.group(1)) / 1000,
                         "edges": int(m.group(2)) / 1000, **{k: v / 1000 for k, v in phases.items()}})
            page.wait_for_timeout(150)  # a person's pause between strokes
        if screenshot:  # of an example, or of a cat drawn with the mouse (the random strokes make a poor picture)
            n_loads = page.evaluate("() => window.__bench.loads.length")
            if screenshot_example >= 0:
                page.locator("#examples button.gallery-item").nth(screenshot_example).click()
            else:
                page.locator("#sketch [data-act=clear]").click()
                for points in CAT_STROKES:
                    stroke(page, canvas, points)
                    page.wait_for_timeout(100)
                page.wait_for_timeout(1500)  # the pen-up render of the last stroke
            page.wait_for_function("n => window.__bench.loads.length > n", arg=n_loads)
            page.wait_for_function("() => [...document.querySelectorAll('#output img, #edges img, #gallery img')]"
                                   ".every(i => i.complete && i.naturalWidth > 0)")
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=screenshot, full_page=True)
        browser.close()
    return rows


def bench_api(url: str, model: str, calls: int, samples: int) -> list[dict]:
    from gradio_client import Client, handle_file

    from p2p_demo.examples import example_paths

    client = Client(url, verbose=False)
    drawing = handle_file(str(example_paths()[0]))
    rows = []
    for i in range(calls + 1):
        t0 = time.perf_counter()
        *_, timings = client.predict(drawing, model, samples, i, False, "sketch", api_name="/render")
        if i:
            rows.append({"total": time.perf_counter() - t0, "model": timings["model"], "edges": timings["edges"]})
    return rows


def table(title: str, rows: list[dict]) -> str:
    tot = [r["total"] for r in rows]
    mod = [r["model"] for r in rows]
    edg = [r["edges"] for r in rows]
    rest = [r["total"] - r["model"] - r["edges"] for r in rows]
    share = [r["model"] / r["total"] for r in rows]
    ms = lambda xs, q: f"{percentile(xs, q) * 1000:7.0f}"  # noqa: E731
    return (f"{title:<26}{len(rows):>4} {ms(tot, .5)} {ms(tot, .95)} {ms(mod, .5)} {ms(edg, .5)} {ms(rest, .5)}"
            f" {statistics.median(share) * 100:8.0f}%")


def server_table(title: str, traces: tuple[list[dict], dict], fn: str, events: int) -> str:
    mine = [t for t in traces[0] if t["fn_name"] == fn]
    uploads = traces[1]
    med = lambda key, ts: statistics.median(t[key] for t in ts) if ts else float("nan")  # noqa: E731
    return (f"{title:<26}{len(mine) / max(events, 1):7.1f} {uploads.get('count', 0) / max(events, 1):8.1f} "
            f"{uploads.get('p50', float('nan')):7.0f} "
            f"{med('queue_wait_ms', mine):7.0f} {med('preprocess_ms', mine):7.0f} {med('fn_call_ms', mine):7.0f} "
            f"{med('postprocess_ms', mine):8.0f} {med('total_ms', mine):7.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strokes", type=int, default=20)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--samples", type=int, default=None, help="samples per render (default: the app's default)")
    ap.add_argument("--model", default=None, help="registry id (default: the first bundled model)")
    ap.add_argument("--weights-dir", type=Path, default=None)
    ap.add_argument("--screenshot", default=None, help="after the strokes, load an example and save a screenshot")
    ap.add_argument("--screenshot-example", type=int, default=0, help="which example (0 = the first; -1 = a cat drawn with the mouse)")
    ap.add_argument("--stand-in-ngf", type=int, default=None,
                    help="width of the random stand-in used when no bundled model is installed "
                         "(default: the default model's, bench.common.DEFAULT_ARCH)")
    args = ap.parse_args()

    import app
    from p2p_demo import gradio_glue as glue

    samples = args.samples or app.DEFAULT_SAMPLES
    weights_dir, model, note = pick_model(args.weights_dir, args.model, args.stand_in_ngf)
    t0 = time.perf_counter()
    demo = app.build_app(weights_dir, default_model=model)
    startup = time.perf_counter() - t0
    glue.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                quiet=True)
    from gradio.profiling import PROFILING_ENABLED, collector

    try:
        collector.clear()
        browser_rows = bench_browser(demo.local_url, args.strokes, samples, args.screenshot,
                                     args.screenshot_example)
        browser_traces = collector.get_all(), collector.get_summary().get("upload", {})
        collector.clear()
        api_rows = bench_api(demo.local_url, model, args.calls, samples)
        api_traces = collector.get_all(), collector.get_summary().get("upload", {})
    finally:
        demo.close()

    import torch

    from bench.common import load_average

    print(f"model: {note}; {samples} sample(s) per render; torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, load average {load_average()}; app start (load + warm-up) {startup:.1f} s")
    print(f"{'':<26}{'n':>4} {'p50 ms':>7} {'p95 ms':>7} {'model':>7} {'edges':>7} {'rest':>7} {'model %':>9}")
    print(table("stroke -> image (browser)", browser_rows))
    print(table("/render (gradio_client)", api_rows))
    phased = [r for r in browser_rows if "client" in r]
    if phased:
        med = lambda k: statistics.median(r[k] for r in phased) * 1000  # noqa: E731
        print(f"stroke -> image, medians: canvas PNG + event sent {med('client'):.0f} ms, "
              f"server + result {med('server'):.0f} ms, image fetch + paint {med('image'):.0f} ms")
    print("model, edges, rest and model % are medians; rest = total - model - edges")
    if PROFILING_ENABLED:
        print()
        print("inside the server (gradio profiling, medians in ms; runs and uploads per stroke or call)")
        print(f"{'':<26}{'runs':>7} {'uploads':>8} {'upload':>7} {'queue':>7} {'preproc':>7} {'fn':>7} {'postproc':>8} {'total':>7}")
        print(server_table("stroke (render_sketch)", browser_traces, "render_sketch", len(browser_rows) + 1))
        print(server_table("/render", api_traces, "render", len(api_rows) + 1))


if __name__ == "__main__":
    main()
