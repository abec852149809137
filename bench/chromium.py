"""Driving the app in Debian's Chromium: how to launch it, a free port for the app, the mouse as a pen.

Shared by the benchmarks that open the app in a browser (``bench.app_latency``, ``bench.browser``)
and by ``scripts/sketch_figure.py``, which draws its sketches with this pen.
"""

from __future__ import annotations

import math
import socket
from typing import Any, Sequence

CHROMIUM = "/usr/bin/chromium"
# /work/shared/GRADIO.md: no WebGL switch (the page needs it), nothing that reaches the internet.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

Points = Sequence[tuple[float, float]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def circle(cx: float, cy: float, r: float, n: int = 24, start: float = 0.0, end: float = 2 * math.pi,
           squash: float = 1.0) -> list[tuple[float, float]]:
    """An arc (a whole circle by default) as n segments; ``squash`` scales its height."""
    angles = [start + (end - start) * k / n for k in range(n + 1)]
    return [(cx + r * math.cos(a), cy + squash * r * math.sin(a)) for a in angles]


def stroke(page: Any, canvas: dict, points: Points) -> None:
    """One pen stroke with the mouse through points given as fractions of the canvas box
    (``canvas``: its bounding box, from Playwright's ``bounding_box()``)."""
    xy = [(canvas["x"] + a * canvas["width"], canvas["y"] + b * canvas["height"]) for a, b in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=2)
    page.mouse.up()
