"""Rendering in the browser: the cold first load, then model time per frame, frames per second while
drawing, pen-up to picture.

    python -m bench.browser [--strokes 8] [--threads 1 2] [--model openmoji] [--samples 3] [--cold 1]

Runs the real app in-process on 127.0.0.1 with a bundled model, opens it in Debian's Chromium
(headless, software painting, no GPU: WASM) once per thread count (``?threads=N``; the page is
cross-origin isolated, so WASM threads work), and draws strokes of 60 pointer moves, one every 16 ms (a 60 Hz pen, dispatched in the page).

* cold (a new browser, empty cache, as a first visitor): the page loads and a stroke is drawn at once;
  MB over the wire (compressed bytes of every response finished, headers included, Chromium's own
  count) until the first picture rendered in the browser is on screen, which files they were, and
  the time from navigation start to that picture (and to the runtime and model being ready).
* model ms per frame: ``session.run`` of the live frames (1 sample, 256²), in the page's clock.
* frames/s while drawing: live frames finished between pointerdown and pointerup, over that time
  (the renderer draws the newest state whenever the last frame is done; frames never queue).
* pen-up -> picture: from pointerup to the final frame's sample 1 painted on the output canvas.
* server: /gradio_api requests the page made during the strokes, renders the server did, and this
  process's CPU time during the strokes (the app's threads plus Playwright's Python client).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.chromium import CHROMIUM, CHROMIUM_ARGS, free_port  # noqa: E402
from bench.common import load_average, percentile  # noqa: E402

MOVES = 60  # pointer moves per stroke, one every 16 ms: about a second of drawing

# A pen in the page's own clock: pointerdown, a move every 16 ms (a 60 Hz pen) along a zigzag, pointerup.
# Playwright's mouse.move waits for each event to be handled and painted (~0.2 s under load here),
# which would measure the driver's pace rather than the renderer's.
PEN = """([x0, y0, w, h, moves]) => new Promise((done) => {
  const c = document.querySelector('#sketch canvas');
  const ev = (type, k) => c.dispatchEvent(new PointerEvent(type, {pointerId: 7, bubbles: true, button: 0,
      clientX: x0 + w * k / moves, clientY: y0 + h * ((k % 8) / 8)}));
  ev('pointerdown', 0);
  let k = 0;
  const id = setInterval(() => {
    k += 1;
    ev('pointermove', k);
    if (k === moves) { clearInterval(id); ev('pointerup', k); done(); }
  }, 16);
})"""

PROBE = """() => {
  window.__b = {down: [], up: []};
  addEventListener('pointerdown', () => __b.down.push(performance.now()), true);
  addEventListener('pointerup', () => __b.up.push(performance.now()), true);
}"""


def cold_page(url: str) -> dict:
    """A first visit: a fresh browser profile (nothing cached), a stroke drawn as soon as the canvas is
    there; the bytes received and the time until the first picture rendered in the browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.set_default_timeout(120_000)
        cdp = page.context.new_cdp_session(page)
        urls: dict[str, str] = {}
        received: dict[str, tuple[int, str]] = {}  # request id -> (encoded bytes, content-encoding)
        encodings: dict[str, str] = {}
        cdp.on("Network.requestWillBeSent", lambda e: urls.__setitem__(e["requestId"], e["request"]["url"]))
        cdp.on("Network.responseReceived", lambda e: encodings.__setitem__(
            e["requestId"], {k.lower(): v for k, v in e["response"]["headers"].items()}.get("content-encoding", "")))
        cdp.on("Network.loadingFinished", lambda e: received.__setitem__(
            e["requestId"], (e["encodedDataLength"], encodings.get(e["requestId"], ""))))
        cdp.send("Network.enable")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": False})
        page.goto(url, wait_until="commit")
        page.wait_for_selector("#sketch canvas")
        c = page.locator("#sketch canvas").first.bounding_box()
        page.evaluate(PEN, [c["x"] + 0.3 * c["width"], c["y"] + 0.4 * c["height"], 0.4 * c["width"],
                            0.2 * c["height"], 20])
        # What the visitor is told meanwhile: the note under the canvas while the server renders.
        page.wait_for_function("() => window.p2pBrowser && p2pBrowser.mode !== 'starting'")
        note = page.locator("#sketch .p2p-note").inner_text()
        page.wait_for_function("() => window.p2pBrowser && p2pBrowser.frames.length > 0")
        got = dict(received)  # what had arrived when the picture was on screen
        t = page.evaluate("() => ({first: p2pBrowser.frames[0].tFirst, ready: p2pBrowser.readyAt, "
                          "load: performance.getEntriesByType('navigation')[0].loadEventEnd, "
                          "ep: p2pBrowser.ep, threads: p2pBrowser.threads})")
        browser.close()
    parts: dict[str, list] = {}
    for rid, (size, coding) in got.items():
        u = urls.get(rid, "?")
        name = ("runtime WASM" if u.endswith(".wasm") else "runtime JS" if "/p2p/ort/" in u
                else "model" if u.endswith(".onnx") else "app scripts" if "/p2p/js/" in u else "page (Gradio)")
        part = parts.setdefault(name, [0, set()])
        part[0] += size
        if name != "page (Gradio)":
            part[1].add(coding or "identity")
    return {**t, "note": note, "bytes": sum(v[0] for v in got.values()), "requests": len(got),
            "parts": {k: (v[0], ", ".join(sorted(v[1]))) for k, v in parts.items()}}


def run_page(url: str, threads: int | None, strokes: int, samples: int, counter: dict, proxy: bool = False) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.set_default_timeout(60_000)
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(url + f"?threads={threads or 0}" + ("&proxy=1" if proxy else ""))
        page.wait_for_function("() => window.p2pBrowser && p2pBrowser.mode === 'browser'")
        box = page.locator("#samples input[type=number]")
        box.fill(str(samples))
        box.press("Enter")
        page.wait_for_function("() => p2pBrowser.idle()")
        page.evaluate(PROBE)
        c = page.locator("#sketch canvas").first.bounding_box()
        info = page.evaluate("() => ({ep: p2pBrowser.ep, threads: p2pBrowser.threads, iso: crossOriginIsolated})")
        live, fps, penup, moves = [], [], [], []
        req0, renders0, cpu0 = None, None, None
        for i in range(strokes + 1):  # stroke 0 warms up
            if i == 1:
                req0, renders0, cpu0 = len(requests), counter["renders"], time.process_time()
            n0 = page.evaluate("() => p2pBrowser.frames.length")
            cx, cy = 0.25 + 0.5 * ((i * 0.37) % 1), 0.25 + 0.5 * ((i * 0.61) % 1)
            page.evaluate(PEN, [c["x"] + (cx - 0.1) * c["width"], c["y"] + (cy - 0.05) * c["height"],
                                0.2 * c["width"], 0.1 * c["height"], MOVES])
            page.wait_for_function("n => p2pBrowser.idle() && p2pBrowser.frames.length > n "
                                   "&& p2pBrowser.frames[p2pBrowser.frames.length - 1].kind === 'final'", arg=n0)
            if i == 0:
                continue
            f = page.evaluate("n => ({frames: p2pBrowser.frames.slice(n), down: __b.down[__b.down.length - 1], "
                              "up: __b.up[__b.up.length - 1]})", n0)
            during = [x for x in f["frames"] if x["kind"] == "live" and x["t1"] <= f["up"]]
            live += [x["first_ms"] for x in f["frames"] if x["kind"] == "live"]
            fps.append(len(during) / ((f["up"] - f["down"]) / 1000))
            moves.append(MOVES / ((f["up"] - f["down"]) / 1000))
            final = [x for x in f["frames"] if x["kind"] == "final" and x["t0"] >= f["up"] - 1]
            penup.append(final[0]["tFirst"] - f["up"])
            page.wait_for_timeout(150)
        cpu = time.process_time() - cpu0
        server_requests = [u for u in requests[req0:] if "/gradio_api/" in u]
        browser.close()
    return {**info, "live": live, "fps": fps, "penup": penup, "moves": moves, "requests": len(server_requests),
            "renders": counter["renders"] - renders0, "cpu": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strokes", type=int, default=8)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--model", default="openmoji")
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--proxy", action="store_true", help="also run ONNX Runtime Web in its worker (?proxy=1)")
    ap.add_argument("--cold", type=int, default=1, help="first visits to measure (a fresh browser each)")
    args = ap.parse_args()

    import app
    from p2p_demo import gradio_glue as glue
    from p2p_demo import webrt

    if not webrt.available():
        raise SystemExit("error: ONNX Runtime Web is not installed; run python -m p2p_demo fetch-web-runtime")
    demo = app.build_app(None, default_model=args.model)
    manager = glue.browser_models(demo).manager
    counter = {"renders": 0}
    render = manager._render

    def counted(*a, **k):
        counter["renders"] += 1
        return render(*a, **k)

    manager._render = counted
    glue.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                quiet=True)
    try:
        cold = [cold_page(demo.local_url) for _ in range(args.cold)]
        results = [((t, False), run_page(demo.local_url, t, args.strokes, args.samples, counter)) for t in args.threads]
        if args.proxy:
            results += [((t, True), run_page(demo.local_url, t, args.strokes, args.samples, counter, proxy=True))
                        for t in args.threads]
    finally:
        demo.close()
    print(f"model {args.model}, 256², {args.samples} samples at pen-up; headless Chromium (software, no GPU), "
          f"{os.cpu_count()} CPUs, load average {load_average()}; {args.strokes} strokes of {MOVES} moves at 60 Hz")
    for i, r in enumerate(cold):
        print(f"cold {i + 1} (empty cache, {r['ep'].upper()} {r['threads']} thread{'s' * (r['threads'] > 1)}): "
              f"{r['bytes'] / 1e6:.1f} MB over the wire in {r['requests']} responses before the first in-browser "
              f"picture, {r['first'] / 1000:.1f} s after navigation start (page load event {r['load'] / 1000:.1f} s, "
              f"browser renderer ready {r['ready'] / 1000:.1f} s)")
        print("    " + "; ".join(f"{name} {size / 1e6:.2f} MB{f' ({coding})' if coding else ''}"
                                 for name, (size, coding) in sorted(r["parts"].items(), key=lambda kv: -kv[1][0])))
    print(f"{'runtime':<28}{'model p50':>10}{'p95':>7}{'frames/s':>10}{'moves/s':>9}{'pen-up p50':>12}"
          f"{'p95':>7}{'server req':>11}{'renders':>8}{'CPU s':>7}")
    for (t, proxy), r in results:
        name = (f"{r['ep'].upper()}, {r['threads']} thread{'s' * (r['threads'] > 1)}{', worker' if proxy else ''}"
                f"{'' if r['iso'] else ' (not isolated)'}")
        print(f"{name:<28}{percentile(r['live'], 0.5):>10.1f}{percentile(r['live'], 0.95):>7.1f}"
              f"{percentile(r['fps'], 0.5):>10.1f}{percentile(r['moves'], 0.5):>9.1f}{percentile(r['penup'], 0.5):>12.1f}"
              f"{percentile(r['penup'], 0.95):>7.1f}{r['requests']:>11}{r['renders']:>8}{r['cpu']:>7.2f}")
    print("model and pen-up in ms (p50 / p95 over live frames and strokes); frames/s and moves/s are medians per "
          "stroke; server req: /gradio_api requests during the strokes; renders: server renders; CPU s: this "
          "process (server + Playwright client) during the strokes")


if __name__ == "__main__":
    main()
