"""``python -m bench <section> [options]``; ``python -m bench all`` runs every section in turn."""

from __future__ import annotations

import logging
import sys

SECTIONS = {
    "cpu": "generator on the CPU: bundled models vs the reference, eager and ONNX Runtime, 128-512 px",
    "gpu": "generator on a GPU: eager fp32 / fp16 / CUDA graphs, batch 1 and 8, and the hardware floor",
    "render": "the full /render path (edges -> generator -> PNG): p50/p95 and each stage's share",
    "memory": "resident memory of the running app (app.py in a subprocess, one render)",
    "knobs": "CPU knobs tried: threads, channels_last, jit.freeze, torch.compile, bf16, ORT options",
}
ALL = ("cpu", "render", "memory", "gpu")


def usage() -> str:
    lines = ["usage: python -m bench {" + ",".join([*SECTIONS, "all"]) + "} [options]  (-h after a section for its options)", ""]
    lines += [f"  {k:<8}{v}" for k, v in SECTIONS.items()]
    lines.append(f"  {'all':<8}{', '.join(ALL)} with their default options")
    return "\n".join(lines)


def run_section(name: str, argv: list[str]) -> int:
    import importlib

    module = importlib.import_module(f"bench.{name}")
    return module.main(argv) or 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "all":
        status = 0
        for section in ALL:
            code = run_section(section, [])
            if section != "gpu":  # no GPU here is not a failure of "all"
                status = max(status, code)
            sys.stdout.flush()
        return status
    if name not in SECTIONS:
        print(f"error: unknown section {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return run_section(name, rest)


if __name__ == "__main__":
    sys.exit(main())
