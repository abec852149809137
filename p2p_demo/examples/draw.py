"""Redraw the hand-made example line drawings: ``python -m p2p_demo.examples.draw``.

Black 3 px polylines on white 256x256 paper, the line style of the canonical edge maps, so they
look like something a visitor could have drawn on the canvas.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SIZE = 256
HERE = Path(__file__).parent


def _ellipse(cx: float, cy: float, rx: float, ry: float, a0: float = 0, a1: float = 360, n: int = 48) -> np.ndarray:
    t = np.radians(np.linspace(a0, a1, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _draw(lines: list[np.ndarray], closed: set[int] = frozenset()) -> np.ndarray:
    img = np.full((SIZE, SIZE), 255, np.uint8)
    for i, pts in enumerate(lines):
        pts = np.round(np.asarray(pts, np.float64)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(img, [pts], i in closed, 0, 3, cv2.LINE_AA)
    return img


def cat_face() -> np.ndarray:
    head = _ellipse(128, 140, 88, 76, -60, 240)
    left_ear = [(62, 82), (58, 28), (104, 66)]
    right_ear = [(194, 82), (198, 28), (152, 66)]
    eyes = [_ellipse(96, 126, 14, 10), _ellipse(160, 126, 14, 10)]
    pupils = [[(96, 118), (96, 134)], [(160, 118), (160, 134)]]
    nose = [(120, 158), (136, 158), (128, 168), (120, 158)]
    mouth = [_ellipse(116, 170, 12, 10, 0, 160), _ellipse(140, 170, 12, 10, 20, 180)]
    whiskers = [[(100, 168), (36, 156)], [(100, 176), (38, 184)], [(156, 168), (220, 156)], [(156, 176), (218, 184)]]
    return _draw([head, left_ear, right_ear, *eyes, *pupils, nose, *mouth, *whiskers])


def shoe() -> np.ndarray:
    upper = [(30, 176), (34, 128), (52, 104), (78, 100), (96, 112), (124, 124), (160, 134),
             (196, 146), (222, 160), (230, 178)]
    sole = [(24, 176), (232, 178), (234, 194), (222, 202), (34, 200), (24, 190), (24, 176)]
    collar = _ellipse(68, 104, 18, 8, 180, 360)
    laces = [[(100, 116), (92, 134)], [(114, 121), (106, 140)], [(128, 126), (120, 146)], [(142, 130), (134, 150)]]
    toe = _ellipse(212, 178, 20, 16, 200, 290)
    stripe = [(70, 150), (120, 140), (170, 160)]
    return _draw([upper, sole, collar, *laces, toe, stripe])


def smiley() -> np.ndarray:
    face = _ellipse(128, 128, 96, 96)
    eyes = [_ellipse(94, 104, 10, 16), _ellipse(162, 104, 10, 16)]
    smile = _ellipse(128, 140, 56, 40, 20, 160)
    return _draw([face, *eyes, smile], closed={0, 1, 2})


def house() -> np.ndarray:
    walls = [(58, 120), (58, 222), (198, 222), (198, 120)]
    roof = [(40, 126), (128, 44), (216, 126)]
    chimney = [(164, 84), (164, 52), (184, 52), (184, 102)]
    door = [(112, 222), (112, 166), (144, 166), (144, 222)]
    windows = [[(74, 140), (102, 140), (102, 166), (74, 166), (74, 140)],
               [(154, 140), (182, 140), (182, 166), (154, 166), (154, 140)]]
    panes = [[(88, 140), (88, 166)], [(74, 153), (102, 153)], [(168, 140), (168, 166)], [(154, 153), (182, 153)]]
    return _draw([walls, roof, chimney, door, *windows, *panes])


def main() -> None:
    for name, fn in [("cat_face", cat_face), ("shoe", shoe), ("smiley", smiley), ("house", house)]:
        cv2.imwrite(str(HERE / f"{name}.png"), fn())


if __name__ == "__main__":
    main()
