"""Command line: ``python -m p2p_demo render | edges | models | export-onnx | fetch-web-runtime``.

Errors end the program with exit status 1 and one line on stderr that says what was wrong.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import P2PError
from .files import IMAGE_SUFFIXES


class CliError(P2PError):
    pass


def _inputs(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise CliError(f"{path}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    if not path.exists():
        raise CliError(f"{path}: no such file or folder")
    return [path]


def _outputs(inputs: list[Path], input_arg: Path, out: Path, n: int) -> list[list[Path]]:
    """Where each input's n results go. A folder input (or an out without suffix) -> folder out."""
    folder = input_arg.is_dir() or out.suffix == "" or len(inputs) > 1
    if folder:
        out.mkdir(parents=True, exist_ok=True)
    result = []
    for p in inputs:
        target = out / f"{p.stem}.png" if folder else out
        if n == 1:
            result.append([target])
        else:
            result.append([target.with_name(f"{target.stem}_{k}{target.suffix or '.png'}") for k in range(n)])
    return result


def _progress(items: list, desc: str):
    if len(items) <= 1:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img")


def _run_each(inputs: list[Path], outputs: list[list[Path]], desc: str, make) -> None:
    """Call ``make(src) -> images`` per input and save them; one bad input in a folder is skipped.

    A single input's failure is the command's failure (one line); in a folder it is reported and
    the rest go on, unless none could be done.
    """
    from .image import ImageError, save_image

    failures = 0
    for src, targets in zip(_progress(inputs, desc), outputs):
        try:
            images = make(src)
        except (ImageError, ValueError) as e:
            if len(inputs) == 1:
                raise CliError(f"{src}: {e}") from e
            print(f"skipped {src}: {e}", file=sys.stderr)
            failures += 1
            continue
        for img, target in zip(images, targets):
            save_image(img, target)
    if failures == len(inputs):
        raise CliError(f"none of the {len(inputs)} inputs could be used")


def cmd_render(args: argparse.Namespace) -> int:
    from .render import Renderer

    if args.n < 1 or args.n > 64:
        raise CliError(f"-n must be between 1 and 64, got {args.n}")
    if args.size is not None and not 16 <= args.size <= 2048:
        raise CliError(f"--size must be between 16 and 2048 pixels, got {args.size}")
    inputs = _inputs(Path(args.input))
    outputs = _outputs(inputs, Path(args.input), Path(args.out), args.n)
    renderer = Renderer.load(args.model, device=args.device)

    def make(src: Path) -> list:
        return renderer(str(src), edges=args.edges, n=args.n, seed=args.seed,
                        deterministic=args.deterministic, size=args.size).images

    _run_each(inputs, outputs, "render", make)
    return 0


def cmd_edges(args: argparse.Namespace) -> int:
    from . import edges
    from .image import load_image

    inputs = _inputs(Path(args.input))
    outputs = _outputs(inputs, Path(args.input), Path(args.out), 1)
    style = edges.LineStyle() if args.size is None else edges.LineStyle(size=args.size)

    def make(src: Path) -> list:
        rgb = load_image(str(src))
        if args.method == "sketch":
            return [edges.normalize_sketch(rgb, style).image]
        return [edges.photo_to_edges(rgb, method=args.method, style=style).image]

    _run_each(inputs, outputs, "convert", make)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .registry import list_models

    rows = [("id", "source", "available", "expects", "license")]
    for m in list_models():
        rows.append((m.id, m.source, "yes" if m.available else "no", m.expects, m.license))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from . import fast
    from .hub import load_generator
    from .masks import DropoutPlan

    generator, info = load_generator(args.model)
    generator.eval()
    plan = DropoutPlan.of(generator)
    data = fast.export_onnx(generator, plan)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    # Check the file against eager PyTorch on one seeded sample before calling it done.
    side = generator.config.multiple
    x = torch.rand(1, generator.config.in_channels, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    masks = plan.draw([1], side, side) if len(plan) else []
    with torch.no_grad():
        want = fast.MaskedGenerator(generator, plan)(x, *masks)
    got = fast.OnnxRunner(out.read_bytes(), plan)(x, masks)
    diff = float(np.abs(got.numpy() - want.numpy()).max())
    if diff > 1e-3:
        raise CliError(f"{out}: the export differs from PyTorch by {diff:.2g}; please report this model")
    names = ", ".join(fast.input_names(plan))
    print(f"wrote {out} ({len(data) / 2**20:.1f} MB, opset {fast.OPSET}); inputs {names}; output y; "
          f"max |ONNX - PyTorch| {diff:.1e}")
    if len(plan):
        shapes = ", ".join(f"mask{i} (B, {c}, H/{sh}, W/{sw})" + (" constant over each map" if channel else "")
                           for i, (c, (sh, sw), channel) in enumerate(zip(plan.channels, plan.strides, plan.channel)))
        print(f"dropout masks, holding 1/(1-p) for kept units (all ones = dropout off): {shapes}")
    return 0


def cmd_fetch_web_runtime(args: argparse.Namespace) -> int:
    from . import webrt

    try:
        where = webrt.fetch()
    except webrt.RuntimeMissing as e:
        raise CliError(f"{e}; drawings will render on the server") from None
    print(f"{webrt.PACKAGE}@{webrt.VERSION} is in {where}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m p2p_demo",
                                description="pix2pix sketch-to-image: render, edges, models, export-onnx")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("render", help="render images from sketches, photos or edge maps")
    r.add_argument("--model", required=True, help="bundled id, Hub id, model folder, or .pth/.bin/.safetensors file")
    r.add_argument("--input", required=True, help="an image or a folder of images")
    r.add_argument("--out", required=True, help="an image path, or a folder")
    r.add_argument("-n", type=int, default=1, help="samples per input, dropout on (default 1)")
    r.add_argument("--seed", type=int, default=0, help="seed of the dropout samples (default 0)")
    r.add_argument("--deterministic", action="store_true", help="dropout off: one canonical rendering")
    r.add_argument("--edges", choices=["auto", "hed", "canny", "sketch", "none"], default="auto",
                   help="how the input becomes the model's input (default auto: drawing or photo)")
    r.add_argument("--size", type=int, default=None, help="side of the model input in pixels (default: the model's)")
    r.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    r.set_defaults(func=cmd_render)

    e = sub.add_parser("edges", help="turn photos (or drawings) into the canonical edge maps")
    e.add_argument("--input", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--method", choices=["hed", "canny", "sketch"], default="hed")
    e.add_argument("--size", type=int, default=None, help="output side in pixels (default 256)")
    e.set_defaults(func=cmd_edges)

    m = sub.add_parser("models", help="list bundled and known Hub models")
    m.set_defaults(func=cmd_models)

    o = sub.add_parser("export-onnx", help="export a generator to ONNX (dynamic batch/size, dropout masks as inputs)")
    o.add_argument("--model", required=True, help="bundled id, Hub id, model folder, or .pth/.bin/.safetensors file")
    o.add_argument("--out", required=True, help="the .onnx file to write")
    o.set_defaults(func=cmd_export_onnx)

    w = sub.add_parser("fetch-web-runtime", help="fetch ONNX Runtime Web (npm pack, checked) for rendering in the browser")
    w.set_defaults(func=cmd_fetch_web_runtime)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    except Exception as e:  # every other failure still ends in one clear line
        if args.verbose:
            raise
        known = isinstance(e, (ValueError, OSError)) or type(e).__module__.startswith("p2p_demo")
        print(f"error: {e}" if known else f"error: {type(e).__name__}: {e} (run with -v for details)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
