"""Which weights a spec names, and loading them: registry ids, local folders and files, Hub repos."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import CHECKPOINT_SUFFIXES, load_raw
from ..nets import Generator
from ..registry import (CONFIG_FILE, REPO_ID, WEIGHTS_DIR, WEIGHTS_FILE, HubUnavailable, ModelInfo, ModelNotFound,
                        WeightsError, available_bundled, bundled_info, info_from_entry, registry_entries)
from .download import ProgressCallback, RemoteMissing, _unavailable, hub_file, progress_class
from .folder import load_folder

log = logging.getLogger(__name__)
# Files tried, in order, for a Hub repo that is not in the registry.
HUB_CANDIDATES = (CONFIG_FILE, "pytorch_model.bin", WEIGHTS_FILE)


def finish(generator: Generator, device: str | torch.device, dtype: torch.dtype) -> Generator:
    if dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype}")
    generator = generator.to(device=torch.device(device), dtype=dtype)
    # Deterministic until the caller sets per-sample dropout masks (see p2p_demo.masks): eval mode,
    # per-image statistics (the reference's test mode), dropout enabled for seeded sampling.
    generator.set_inference_mode(per_image_stats=True, dropout=True)
    return generator.eval()


def _load_repo(repo_id: str, info: ModelInfo, revision: str | None, *, token: Any, tqdm_class: Any,
               weights_dir: Any) -> tuple[Generator, ModelInfo]:
    """A Hub repo: the file ``info.filename`` if given, else the first of HUB_CANDIDATES it has."""
    if revision:
        info = replace(info, revision=revision)
    kw = dict(revision=info.revision, token=token, tqdm_class=tqdm_class, weights_dir=weights_dir, size_mb=info.size_mb)
    info = replace(info, source="hub", repo_id=repo_id, revision=info.revision or "main")
    if info.filename:  # a registry entry says which file
        candidates: tuple[str, ...] = (info.filename,)
    else:
        candidates = HUB_CANDIDATES
    unavailable: HubUnavailable | None = None
    log.info("looking for %s on the Hub (or in its cache): %s", repo_id, ", ".join(candidates))
    for name in candidates:
        try:
            path = hub_file(repo_id, name, **kw)
        except RemoteMissing:
            continue
        except HubUnavailable as e:  # offline: another layout may still be cached
            unavailable = unavailable or e
            continue
        if name == CONFIG_FILE:  # our own format: the weights sit beside the config
            try:
                hub_file(repo_id, WEIGHTS_FILE, **kw)
            except RemoteMissing:
                raise WeightsError(f"{repo_id} has {CONFIG_FILE} but no {WEIGHTS_FILE} on the Hub") from None
            return load_folder(path.parent, replace(info, filename=CONFIG_FILE))
        return load_raw(path, replace(info, filename=name))
    if unavailable is not None:
        if len(candidates) > 1:  # name the repo, not the first of the files that were tried
            raise _unavailable(repo_id, None, getattr(unavailable, "reason", "no network"), weights_dir, info.size_mb)
        raise unavailable
    raise ModelNotFound(f"{repo_id} on the Hub has none of the files this app loads: {CONFIG_FILE} + {WEIGHTS_FILE} "
                        "(our format) or pytorch_model.bin / model.safetensors (a raw generator state_dict)")


def _load_local(path: Path) -> tuple[Generator, ModelInfo]:
    """An existing model folder (our format) or checkpoint file (any format ``checkpoints`` reads)."""
    name = path.name if path.name not in ("", ".") else path.resolve().name
    if path.is_dir():
        return load_folder(path, ModelInfo(id=name, source="folder", path=path))
    return load_raw(path, ModelInfo(id=name, name=path.stem, source="file", path=path))


def _repo_info(repo_id: str, entry: dict | None = None, **kw: Any) -> ModelInfo:
    """A Hub repo as the registry lists it, or a plain description of an unlisted one."""
    if entry is not None:
        return info_from_entry(entry)
    return ModelInfo(id=repo_id, name=repo_id.split("/")[1], source="hub", **kw)


def load_generator(
    spec: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    revision: str | None = None,
    token: str | bool | None = None,
    tqdm_class: Any = None,
    progress: ProgressCallback | None = None,
    weights_dir: str | os.PathLike | None = None,
) -> tuple[Generator, ModelInfo]:
    """Load a generator from a registry id, a Hub repo id, a model folder or a checkpoint file.

    Resolution order: registry id, then an existing local path, then ``owner/name`` on the Hub.
    ``tqdm_class`` (any tqdm-like class) or ``progress(done_bytes, total_bytes, filename)`` show
    download progress. The generator comes back on ``device`` in ``dtype``, in eval mode with
    per-image statistics; it is deterministic until dropout masks are given (``masks.seeded_forward``).

    Raises ``ModelNotFound``, ``WeightsError`` or ``HubUnavailable`` (all ``LoadError``).
    """
    tqdm_class = progress_class(progress, tqdm_class)
    wdir = Path(weights_dir or WEIGHTS_DIR)
    text = os.fspath(spec)
    entries = {e["id"]: e for e in registry_entries(wdir)}
    path = Path(text).expanduser()
    # "weights/openmoji" with weights/ present is a mistyped local path, not a Hub repo.
    looks_like_path = (text.startswith((".", "/", "~")) or "\\" in text or path.suffix.lower() in CHECKPOINT_SUFFIXES
                       or (len(path.parts) > 1 and path.parent.is_dir()))

    if text in entries and entries[text]["source"] == "bundled":
        info = bundled_info(entries[text], wdir)  # config.json merged with the registry's text
        if not info.available:
            others = [m for m in available_bundled(wdir) if m != info.id]
            raise ModelNotFound(info.problem + (f" Available now: {', '.join(others)}." if others else ""))
        generator, _ = load_folder(info.path, info)
    elif text in entries:
        generator, info = _load_repo(entries[text]["repo_id"], info_from_entry(entries[text]), revision,
                                     token=token, tqdm_class=tqdm_class, weights_dir=wdir)
    elif path.exists():
        generator, info = _load_local(path)
    elif REPO_ID.match(text) and not looks_like_path:
        entry = next((e for e in entries.values() if e["source"] == "hub" and e["repo_id"] == text), None)
        generator, info = _load_repo(text, _repo_info(text, entry), revision,
                                     token=token, tqdm_class=tqdm_class, weights_dir=wdir)
    elif looks_like_path or len(path.parts) > 2:
        raise ModelNotFound(f"no such file or folder: {text}")
    else:
        known = ", ".join(entries) or "none"
        raise ModelNotFound(f"unknown model {text!r}: not a registry id (known: {known}), not an existing file or "
                            "folder, and not a Hub repo id (owner/name)")
    return finish(generator, device, dtype), info


def from_pretrained(
    folder_or_repo_id: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    revision: str | None = None,
    token: str | bool | None = None,
    tqdm_class: Any = None,
    progress: ProgressCallback | None = None,
) -> tuple[Generator, ModelInfo]:
    """Load a model in our own format (config.json + model.safetensors) from a folder or a Hub repo.

    The same loading path as :func:`load_generator`, narrowed: no registry ids, no raw checkpoints.
    """
    tqdm_class = progress_class(progress, tqdm_class)
    text = os.fspath(folder_or_repo_id)
    path = Path(text).expanduser()
    if path.is_dir():
        generator, info = _load_local(path)
    elif path.exists():
        raise WeightsError(f"{path} is a file; from_pretrained reads model folders (config.json + "
                           f"{WEIGHTS_FILE}). Use load_generator() for raw checkpoints")
    elif REPO_ID.match(text):
        generator, info = _load_repo(text, _repo_info(text, filename=CONFIG_FILE), revision,
                                     token=token, tqdm_class=tqdm_class, weights_dir=None)
    else:
        raise ModelNotFound(f"no such folder, and not a Hub repo id (owner/name): {folder_or_repo_id}")
    return finish(generator, device, dtype), info
