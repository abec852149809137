"""Pixels in and out: the only place images become tensors and tensors become images.

Conventions used everywhere in the project:
* an *image* is a ``numpy.uint8`` array, ``(H, W)`` grayscale or ``(H, W, 3)`` RGB;
* a *tensor* is float ``(B, C, H, W)`` in ``[-1, 1]`` (white = +1, black = -1);
* an *edge map* is a ``(H, W)`` uint8 image, black (0) lines on white (255) paper.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import P2PError

# What we agree to decode. The models work at 256 (at most 512) px, so nothing needs more than a
# camera photo. The limits are checked on the header, before any pixel is decoded, so a small file
# that declares absurd dimensions (a "decompression bomb", or a 1 x 30,000,000 strip that takes
# seconds and a gigabyte to decode) is refused at once, and no request decodes more than MAX_PIXELS.
MAX_PIXELS = 4096 * 4096  # decoded pixels (16.8 M); a bigger JPEG is decoded at 1/2-1/8 size
MAX_SIDE = 8192  # the longer side, as declared
MAX_ASPECT = 20  # longer side / shorter side: a strip thinner than this has nothing for the model
MAX_FILE_BYTES = 50 * 1024 * 1024

ImageSource = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]


class ImageError(P2PError, ValueError):
    """An input that is not a usable image; the message says what is wrong and what to do."""


def _open(source: str | os.PathLike | bytes) -> Image.Image:
    if isinstance(source, bytes):
        if not source:
            raise ImageError("the file is empty (0 bytes); upload a PNG or JPEG image")
        if len(source) > MAX_FILE_BYTES:
            raise ImageError(f"the file is {len(source) / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB")
        fp: io.BytesIO | Path = io.BytesIO(source)
        name = "the upload"
    else:
        fp = Path(source)
        name = fp.name
        if not fp.is_file():
            raise ImageError(f"{fp}: no such file")
        size = fp.stat().st_size
        if size == 0:
            raise ImageError(f"{name} is empty (0 bytes); use a PNG or JPEG image")
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{name} is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name} is too large to decode safely; use an image under {MAX_PIXELS // 10**6} megapixels") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{name} is not an image PIL can read (is it really a PNG/JPEG/WebP?)") from e
    return bounded(img, name)


def bounded(img: Image.Image, name: str = "the image") -> Image.Image:
    """``img`` (opened, not yet decoded) if its declared size is one we agree to decode; a JPEG over
    MAX_PIXELS is set to decode at 1/2, 1/4 or 1/8 size (PIL's ``draft``: cheap DCT scaling).
    Looks at the header only; raises ImageError saying what is wrong."""
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(f"{name} is {w}x{h} pixels; it has nothing to draw from")
    if max(w, h) > MAX_SIDE:
        raise ImageError(f"{name} is {w}x{h} pixels: too large (the longer side may be at most {MAX_SIDE}); "
                         "resize it and retry")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ImageError(f"{name} is {w}x{h} pixels: too thin for a picture (at most {MAX_ASPECT}:1); "
                         "crop it and retry")
    if w * h > MAX_PIXELS and getattr(img, "tile", None):  # not decoded yet: the decoder may reduce
        k = next((k for k in (2, 4, 8) if (w // k) * (h // k) <= MAX_PIXELS), 8)
        img.draft(img.mode, (w // k, h // k))  # a no-op but for JPEG
    if img.width * img.height > MAX_PIXELS:
        raise ImageError(f"{name} is {w}x{h} pixels ({w * h / 1e6:.0f} megapixels): too large (at most "
                         f"{MAX_PIXELS // 10**6} megapixels); resize it and retry")
    return img


def load_image(source: ImageSource) -> np.ndarray:
    """Read any common image as an RGB uint8 array, or raise ImageError saying why not.

    Handles EXIF rotation, 16-bit, CMYK, palette and alpha images (alpha flattened onto white),
    and animated files (first frame). Refuses empty and truncated files, and (by the header, before
    decoding) images larger, longer or thinner than MAX_PIXELS, MAX_SIDE and MAX_ASPECT allow.
    """
    if isinstance(source, np.ndarray):
        return array_to_rgb(source)
    img = bounded(source) if isinstance(source, Image.Image) else _open(source)
    try:
        if getattr(img, "is_animated", False):
            img.seek(0)  # animated GIF/WebP/APNG: the first frame
        img.load()
        img = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"the image is damaged or truncated ({e}); save it again and retry") from e
    return _pil_to_rgb(img)


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if a.max() > 255 else 255.0
        return np.repeat(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def array_to_rgb(a: np.ndarray) -> np.ndarray:
    """Any (H, W), (H, W, 1|3|4) array (uint8, uint16, bool or float in [0, 1]) -> RGB uint8."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.size == 0:
        raise ImageError("the image has no pixels")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = (a.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        a = (np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        return np.repeat(a[..., None], 3, axis=2)
    if a.shape[2] == 4:  # flatten alpha onto white paper
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        rgb = a[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return (rgb + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 -> (H, W) uint8 luminance (ITU-R 601, as PIL's "L")."""
    if rgb.ndim == 2:
        return rgb
    w = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return (rgb[..., :3].astype(np.float32) @ w + 0.5).astype(np.uint8)


def to_tensor(image: np.ndarray, channels: int) -> torch.Tensor:
    """uint8 (H, W) or (H, W, 3) -> float (1, channels, H, W) in [-1, 1]."""
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] == 3 and channels == 1:
        image = to_gray(image)[..., None]
    elif image.shape[2] == 1 and channels == 3:
        image = np.repeat(image, 3, axis=2)
    if image.shape[2] != channels:
        raise ValueError(f"cannot make {channels} channels from an image with {image.shape[2]}")
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    return (t / 127.5 - 1.0).unsqueeze(0)


def to_images(t: torch.Tensor) -> list[np.ndarray]:
    """float (B, C, H, W) in [-1, 1] -> list of uint8 (H, W, 3) images (1 channel repeated)."""
    t = t.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu()
    if t.shape[1] == 1:
        t = t.repeat(1, 3, 1, 1)
    return [img.permute(1, 2, 0).numpy().copy() for img in t]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (B, C, H, W) on the right/bottom up to multiples of ``multiple``.

    Replicate padding: the border of a sketch is paper, so the padded area reads as paper too,
    and a photo's border is continued rather than mirrored. Returns the tensor and the original
    (H, W) for ``crop``.
    """
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


def crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x[..., : size[0], : size[1]]


def resize(image: np.ndarray, size: tuple[int, int] | int) -> np.ndarray:
    """Resize a uint8 image to (width, height) with area averaging down and bicubic up."""
    import cv2  # OpenCV is only needed where pixels are resized

    if isinstance(size, int):
        size = (size, size)
    h, w = image.shape[:2]
    if (w, h) == tuple(size):
        return image
    shrink = size[0] < w or size[1] < h
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


# zlib's fastest level: a 256x256 render encodes in ~40 % of the time of PIL's default (6) and the
# file is ~15 % larger (measured in bench/render.py's stage split; PNG stays lossless either way).
PNG_COMPRESS_LEVEL = 1


def encode_image(image: np.ndarray | Image.Image, fmt: str = "png") -> bytes:
    """The bytes the app serves: PNG at PNG_COMPRESS_LEVEL, other formats with PIL's defaults."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    if fmt.lower() == "png":
        img.save(buf, "png", compress_level=PNG_COMPRESS_LEVEL)
    else:
        img.save(buf, fmt)
    return buf.getvalue()


def save_image(image: np.ndarray, path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def grid(rows: list[list[np.ndarray]], pad: int = 4) -> np.ndarray:
    """Tile equally sized RGB/gray images into one RGB image with white gutters."""
    cells = [[array_to_rgb(c) for c in row] for row in rows]
    h = max(c.shape[0] for row in cells for c in row)
    w = max(c.shape[1] for row in cells for c in row)
    ncol = max(len(r) for r in cells)
    out = np.full((len(cells) * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(cells):
        for j, c in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y : y + c.shape[0], x : x + c.shape[1]] = c
    return out
