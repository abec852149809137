"""``python -m train <command> ...``: prepare | fit | evaluate | export | bench | compare.

Each command's options: ``python -m train <command> --help``. Under torchrun:
``torchrun --nproc_per_node N -m train fit ...``.
"""

from __future__ import annotations

import sys
from typing import Sequence

COMMANDS = {
    "prepare": "make a prepared dataset (manifest.json + train/test .npz)",
    "fit": "train a generator (one process or torchrun DDP)",
    "evaluate": "score a model on a held-out split: L1, PSNR, SSIM, edge F1",
    "export": "checkpoint -> model folder (fp16 safetensors + config + model card)",
    "bench": "training images/s: the fast recipe vs the reference recipe",
    "compare": "ablations and the reference recipe side by side at an equal budget",
}


def usage() -> str:
    lines = ["usage: python -m train <command> [options]", "", "commands:"]
    lines += [f"  {name:<9} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    # Imported on demand: each command pulls in only what it needs.
    if command == "prepare":
        from train.prepare import main as run
    elif command == "fit":
        from train.fit_args import main as run
    elif command == "evaluate":
        from train.evaluate import main as run
    elif command == "export":
        from train.export import main as run
    elif command == "compare":
        from train.compare import main as run
    else:
        from train.throughput import main as run
    return int(run(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
