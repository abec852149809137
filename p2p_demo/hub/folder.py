"""Our model folders: config.json + model.safetensors + a README.md model card (docs/CONTRACTS.md).

``load_folder`` reads one (strict), ``save_pretrained`` writes one atomically.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ..checkpoints import check_and_load, describe, read_state_dict
from ..files import atomic_write
from ..nets import Generator, GeneratorConfig, build_generator
from ..registry import (CARD_FILE, CONFIG_FILE, INPUT_KINDS, UNKNOWN_LICENSE, WEIGHTS_FILE, ModelInfo, WeightsError,
                        info_from_meta, read_model_config)

def load_folder(folder: Path, info: ModelInfo) -> tuple[Generator, ModelInfo]:
    cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not cfg_path.is_file():
        if w_path.is_file():
            raise WeightsError(f"{folder} has {WEIGHTS_FILE} but no {CONFIG_FILE}: a model folder needs both "
                               f"(docs/CONTRACTS.md). To load bare weights, pass the file itself: {w_path}")
        found = sorted(p.name for p in folder.iterdir())[:6] if folder.is_dir() else []
        raise WeightsError(f"{folder} is not a model folder: it needs {CONFIG_FILE} + {WEIGHTS_FILE}"
                           + (f" (it holds {', '.join(found)})" if found else " (it is empty)"))
    config, meta = read_model_config(cfg_path)
    if not w_path.is_file():
        raise WeightsError(f"{folder} has {CONFIG_FILE} but no {WEIGHTS_FILE}")
    sd, _ = read_state_dict(w_path)
    generator = build_generator(config)
    check_and_load(generator, sd, w_path)
    full = info_from_meta(meta, config, id=info.id, source=info.source, path=folder, default_name=info.name or info.id)
    full.repo_id, full.revision, full.size_mb = info.repo_id, info.revision, info.size_mb
    full.filename = info.filename if info.source == "hub" else None
    return generator, full


def _line_style_dict(line_style: Any) -> dict:
    if isinstance(line_style, Mapping):
        return dict(line_style)
    if hasattr(line_style, "to_dict"):
        return dict(line_style.to_dict())
    raise TypeError(f"line_style must be a LineStyle or a dict, got {type(line_style).__name__}")


def _model_card(meta: dict, config: GeneratorConfig, dtype: torch.dtype, n_params: int) -> str:
    lic = meta["license"]
    # The Hub's licence ids are lower case ("cc-by-sa-4.0"); a data manifest may spell the SPDX id
    # "CC-BY-SA-4.0". Anything else (a sentence, "unknown") is "other" in the front matter.
    card_license = lic.lower() if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-]*", lic or "") else "other"
    lines = ["---", f"license: {card_license}", "library_name: pytorch", "pipeline_tag: image-to-image",
             "tags:", "- pix2pix", "- image-to-image", "- p2p_demo", "---", "",
             f"# {meta['name']}", ""]
    if meta["description"]:
        lines += [meta["description"], ""]
    lines += ["## What it expects", "",
              f"- Input: {meta['expects'] or meta['input']} ({'an edge map' if meta['input'] == 'edges' else 'an image'})",
              f"- Line style it was trained with: `{json.dumps(meta['line_style'])}`",
              "- Output: an RGB image in the input's size (sides padded to a multiple of "
              f"{config.multiple} px).", ""]
    lines += ["## Data", "", meta["data"] or "Not stated.", ""]
    lines += ["## Metrics", ""]
    if meta["metrics"]:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in meta["metrics"].items()]
    else:
        lines += ["Not measured."]
    lines += ["", "## Architecture", "",
              f"{describe(config)[0].upper()}{describe(config)[1:]}, dropout {'on' if config.dropout else 'off'}; "
              f"{n_params / 1e6:.2f} M parameters, stored as {str(dtype).replace('torch.', '')} safetensors.", "",
              "```python", "from p2p_demo.hub import load_generator", "generator, info = load_generator(\"<this folder or repo id>\")",
              "```", "", "## Licence", "", lic, ""]
    if meta.get("notes"):
        lines += ["## Notes", "", meta["notes"], ""]
    return "\n".join(lines)


def save_pretrained(
    generator: Generator,
    folder: str | os.PathLike,
    *,
    line_style: Any,
    name: str,
    description: str = "",
    expects: str = "",
    license: str = UNKNOWN_LICENSE,
    input: str = "edges",
    metrics: Mapping[str, Any] | None = None,
    data: str = "",
    notes: str = "",
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write a model folder: config.json + model.safetensors (``dtype``) + README.md model card.

    float16 halves the size (the bundled models' format); float32 round-trips exactly. Each file is
    written to a temporary name and renamed, so a crash never leaves a half-written model.
    """
    from safetensors.torch import save_file

    if dtype not in (torch.float16, torch.float32, torch.bfloat16):
        raise ValueError(f"dtype must be torch.float16, torch.bfloat16 or torch.float32, got {dtype}")
    if input not in INPUT_KINDS:
        raise ValueError(f"input must be one of {INPUT_KINDS}, got {input!r}")
    config: GeneratorConfig = generator.config
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    tensors: dict[str, torch.Tensor] = {}
    for k, t in generator.state_dict().items():
        t = t.detach().to("cpu")
        if t.is_floating_point():
            if dtype == torch.float16 and t.numel() and float(t.abs().max()) > torch.finfo(torch.float16).max:
                raise ValueError(f"{k} has values beyond the float16 range; save with dtype=torch.float32")
            t = t.to(dtype)
        tensors[k] = t.contiguous().clone()
    meta = {
        "generator": config.to_dict(),
        "line_style": _line_style_dict(line_style),
        "input": input,
        "name": name,
        "description": description,
        "expects": expects,
        "license": license,
        "metrics": dict(metrics or {}),
        "data": data,
    }
    if notes:
        meta["notes"] = notes
    n_params = sum(p.numel() for p in generator.parameters())
    atomic_write(folder / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    atomic_write(folder / CONFIG_FILE, lambda p: p.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"))
    atomic_write(folder / CARD_FILE, lambda p: p.write_text(_model_card(meta, config, dtype, n_params), encoding="utf-8"))
    return folder
