"""Hostile and broken image files, generated on the fly (nothing binary is committed).

``corpus(folder)`` writes every case and returns name -> ``Hostile``: the file and what the app
and the command line must do with it: render it (``refusal is None``) or refuse it with one line
containing ``refusal``. The drawings are an arrow that points right, so a test can tell whether
an EXIF-rotated photo was turned the right way (``arrow_direction``).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ARROW_SHAPE = (96, 160)  # (H, W): wider than tall, pointing right
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Hostile:
    path: Path
    refusal: str | None  # None: a correct render is expected; else a word the one-line message contains
    note: str


def arrow(shape: tuple[int, int] = ARROW_SHAPE, ink: int = 0, paper: int = 255, width: int = 3) -> np.ndarray:
    """A gray (H, W) drawing of an arrow pointing right: a shaft and a '>' head at the right end."""
    h, w = shape
    a = np.full(shape, paper, np.uint8)
    cy, x0, x1 = h // 2, w // 8, w - w // 8
    a[cy - width // 2 : cy + width - width // 2, x0:x1] = ink  # shaft
    head = h // 3
    for d in range(head):  # two diagonals meeting at (cy, x1)
        for sign in (-1, 1):
            y, x = cy + sign * d, x1 - d
            a[y - width // 2 : y + width - width // 2, x - width // 2 : x + width - width // 2] = ink
    return a


def arrow_direction(gray: np.ndarray) -> str:
    """Where the arrow in a gray (or RGB) drawing points: right, left, up or down (ink is dark).

    The head is the wide end: along the arrow's long axis, the quarter whose ink spreads furthest
    across the axis is where it points.
    """
    if gray.ndim == 3:
        gray = gray.mean(axis=2)
    ys, xs = np.nonzero(gray < 128)
    if len(ys) == 0:
        return "nothing"
    horizontal = np.ptp(xs) >= np.ptp(ys)
    along, across = (xs, ys) if horizontal else (ys, xs)
    lo, hi = along.min(), along.max()
    quarter = (hi - lo) / 4

    def spread(mask: np.ndarray) -> int:
        return int(np.ptp(across[mask])) if mask.any() else 0

    first, last = spread(along <= lo + quarter), spread(along >= hi - quarter)
    if horizontal:
        return "right" if last > first else "left"
    return "down" if last > first else "up"


def encode(img: Image.Image | np.ndarray, fmt: str, **kw) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A PNG header declaring width x height RGB pixels, with a few bytes of data: a tiny file
    that a decoder would expand to width * height * 3 bytes (1.2 GB at 20000x20000)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def png_blank(width: int, height: int) -> bytes:
    """A valid 1-bit white PNG of width x height: a few kB on disk for millions of pixels, which
    a decoder must inflate row by row (the 1 x 30,000,000 strip is 58 kB and took 7 s and 1 GB)."""
    row = b"\0" + b"\xff" * -(-width // 8)  # filter byte "none", then 8 white pixels a byte
    z = zlib.compressobj(9)
    data = z.compress(row * height)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data + z.flush())
            + _png_chunk(b"IEND", b""))


THIN = (1, 30_000_000)  # (width, height): 30 megapixels, under the old 40 MP guard
HUGE = (6300, 6300)  # 39.7 megapixels, ditto


def exif_rotated_jpeg(drawing: np.ndarray, orientation: int = 6) -> bytes:
    """A JPEG whose pixels are stored turned, with the EXIF tag that turns them back on display.

    Orientation 6 means "rotate 90 degrees clockwise to display": the stored arrow points up.
    """
    stored = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}
    img = Image.fromarray(drawing).convert("RGB").transpose(stored[orientation])
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return encode(img, "JPEG", quality=95, exif=exif.tobytes())


def animated_gif(drawing: np.ndarray) -> bytes:
    frames = [Image.fromarray(drawing).convert("RGB"), Image.new("RGB", drawing.shape[::-1], "white")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="160" height="96">'
       b'<path d="M20 48 H140 M108 16 L140 48 L108 80" stroke="black" stroke-width="3" fill="none"/></svg>\n')


def corpus(folder: Path) -> dict[str, Hostile]:
    """Write every case into ``folder``; name -> Hostile."""
    folder.mkdir(parents=True, exist_ok=True)
    a = arrow()
    png, jpeg = encode(a, "PNG"), encode(Image.fromarray(a).convert("RGB"), "JPEG", quality=95)
    la = np.stack([np.zeros_like(a), 255 - a], -1)  # black ink, transparent paper
    cases: dict[str, tuple[str, bytes, str | None, str]] = {
        "truncated_png": ("png", png[: len(png) // 2], "truncated", "first half of a PNG"),
        "truncated_jpeg": ("jpg", jpeg[: len(jpeg) // 2], "truncated", "first half of a JPEG"),
        "gray16_png": ("png", encode(Image.fromarray(a.astype(np.uint16) * 257), "PNG"), None, "16-bit gray"),
        "cmyk_jpeg": ("jpg", encode(Image.fromarray(a).convert("CMYK"), "JPEG", quality=95), None, "CMYK"),
        "exif_rotated_jpeg": ("jpg", exif_rotated_jpeg(a), None, "stored pointing up, EXIF orientation 6"),
        "palette_png": ("png", encode(Image.fromarray(a).convert("P"), "PNG"), None, "palette (P)"),
        "la_png": ("png", encode(Image.fromarray(la, "LA"), "PNG"), None, "gray + alpha, transparent paper"),
        "one_pixel_png": ("png", encode(np.zeros((1, 1), np.uint8), "PNG"), "blank", "1x1, one black pixel"),
        "bomb_20000_png": ("png", png_bomb(), "too large", "20000x20000 declared, a few hundred bytes"),
        "thin_png": ("png", png_blank(*THIN), "too large", "1x30,000,000, a valid 1-bit PNG of 58 kB"),
        "huge_png": ("png", png_blank(*HUGE), "too large", "6300x6300, a valid 1-bit PNG of 5 kB"),
        "animated_gif": ("gif", animated_gif(a), None, "two frames: the arrow, then white"),
        "svg_as_png": ("png", SVG, "not an image", "an SVG file named .png"),
        "text_as_png": ("png", b"this is not an image at all\n" * 20, "not an image", "a text file named .png"),
        "zero_bytes_png": ("png", b"", "empty", "0 bytes"),
        "all_white_png": ("png", encode(np.full(ARROW_SHAPE, 255, np.uint8), "PNG"), "blank", "blank paper"),
        "all_black_png": ("png", encode(np.zeros(ARROW_SHAPE, np.uint8), "PNG"), "blank", "all ink, no drawing"),
        "inverted_png": ("png", encode(255 - a, "PNG"), None, "white lines on black"),
    }
    out = {}
    for name, (suffix, data, refusal, note) in cases.items():
        path = folder / f"{name}.{suffix}"
        path.write_bytes(data)
        out[name] = Hostile(path, refusal, note)
    return out
