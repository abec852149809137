"""Where weights come from, and our own model format: bundled folders, local files, the Hub.

One entry point, :func:`load_generator`, takes any of

* a registry id (``weights/registry.json``, ``p2p_demo.registry``): a bundled folder or a known Hub model;
* a Hub repo id ``owner/name``: our own format, or a raw checkpoint (``pytorch_model.bin``);
* a local model folder (``config.json`` + ``model.safetensors``, see docs/CONTRACTS.md);
* a checkpoint file: ``.pth`` / ``.bin`` (a pickled state_dict) or ``.safetensors``
  (read and recognised by ``p2p_demo.checkpoints``: strict, never an arbitrary pickle).

:func:`from_pretrained` is the narrower door for our own format only, and :func:`save_pretrained`
/ :func:`push_to_hub` write and publish it (config.json + model.safetensors + a README.md model card).

Hub downloads go through ``huggingface_hub`` (its cache, ``HF_HOME``, ``HF_HUB_OFFLINE``). Nothing
happens at import: no downloads, no CUDA calls, no prints.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .checkpoints import CHECKPOINT_SUFFIXES, check_and_load, describe, load_raw, read_state_dict
from .files import atomic_write
from .nets import Generator, GeneratorConfig, build_generator
from .registry import (
    CARD_FILE, CONFIG_FILE, INPUT_KINDS, REPO_ID, UNKNOWN_LICENSE, WEIGHTS_DIR, WEIGHTS_FILE, HubUnavailable,
    ModelInfo, ModelNotFound, WeightsError, available_bundled, bundled_info, info_from_entry, info_from_meta,
    read_model_config, registry_entries,
)

log = logging.getLogger(__name__)

# Files tried, in order, for a Hub repo that is not in the registry.
HUB_CANDIDATES = (CONFIG_FILE, "pytorch_model.bin", WEIGHTS_FILE)

ProgressCallback = Callable[[int, "int | None", str], None]  # (bytes done, total bytes or None, file name)


def _finish(generator: Generator, device: str | torch.device, dtype: torch.dtype) -> Generator:
    if dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype}")
    generator = generator.to(device=torch.device(device), dtype=dtype)
    # Deterministic until the caller sets per-sample dropout generators (see nets.py): eval mode,
    # per-image statistics (the reference's test mode), dropout enabled for seeded sampling.
    generator.set_inference_mode(per_image_stats=True, dropout=True)
    return generator.eval()


# --------------------------------------------------------------------------------------------
# Our model folders: config.json + model.safetensors (+ README.md)


def _load_folder(folder: Path, info: ModelInfo) -> tuple[Generator, ModelInfo]:
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



# --------------------------------------------------------------------------------------------
# The Hub


class _RemoteMissing(Exception):
    """The repo exists but has no such file (internal: try the next candidate)."""


def _callback_bar(callback: ProgressCallback) -> type:
    """A minimal tqdm stand-in that reports byte progress to ``callback(done, total, filename)``."""

    class _CallbackBar:
        def __init__(self, *args: Any, total: int | None = None, initial: int = 0, desc: str = "", **_: Any) -> None:
            self.total, self.n, self.desc = total, initial, desc

        def update(self, n: int = 1) -> None:
            self.n += n
            callback(self.n, self.total, self.desc)

        def update_transfer(self, n: int = 1) -> None:
            # Xet downloads report network bytes here and written bytes through update(); having
            # this method makes huggingface_hub use one bar, so the callback sees one stream.
            pass

        def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
            pass

        set_transfer_postfix_str = set_postfix_str

        def close(self) -> None:
            pass

        def __enter__(self) -> "_CallbackBar":
            return self

        def __exit__(self, *exc: Any) -> None:
            self.close()

    return _CallbackBar


def _unavailable(repo_id: str, filename: str | None, reason: str, weights_dir: Any,
                 size_mb: float | None = None) -> HubUnavailable:
    from huggingface_hub import constants

    what = ", ".join(x for x in (filename, f"{size_mb:.0f} MB" if size_mb else None) if x)
    bundled = available_bundled(weights_dir)
    err = HubUnavailable(
        f"{repo_id}{f' ({what})' if what else ''} could not be downloaded: {reason}, and it is not in the "
        f"Hugging Face cache ({constants.HF_HUB_CACHE}). Bundled models still work: "
        f"{', '.join(bundled) if bundled else 'none is installed'}. To use this model, connect once "
        "(it stays cached under HF_HOME) or copy that cache folder from a machine that has it."
    )
    err.reason = reason
    return err


@functools.lru_cache(maxsize=2)
def _network_errors(any_http: bool) -> tuple[type[BaseException], ...]:
    """Connection-level exception classes of each HTTP client huggingface_hub may use: requests
    (before 1.0), httpx (1.x), httpx2 (later); only the installed ones are imported. With
    ``any_http`` also their base HTTP errors (a failed transfer, a bad status)."""
    classes: list[type[BaseException]] = [ConnectionError]
    for name in ("httpx2", "httpx"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        classes += [mod.ConnectError, mod.NetworkError, mod.TimeoutException, mod.ProxyError]
        if any_http:
            classes += [mod.HTTPError]  # TransportError, HTTPStatusError, ...
    try:
        import requests
    except ImportError:
        pass
    else:
        classes += [requests.ConnectionError, requests.Timeout]  # ProxyError is a ConnectionError
        if any_http:
            classes += [requests.RequestException]  # HTTPError, ...
    return tuple(classes)


def _is_network_error(e: BaseException, *, any_http: bool = False) -> bool:
    """A connection-level failure, whichever HTTP client this huggingface_hub version uses."""
    return isinstance(e, _network_errors(any_http))


def _hub_file(repo_id: str, filename: str, *, revision: str | None, token: str | bool | None,
              tqdm_class: Any, weights_dir: Any, size_mb: float | None = None) -> Path:
    """One file from the Hub through huggingface_hub's cache; errors mapped to ours."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import (
        FileMetadataError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled,
        RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    rev = revision or "main"

    def map_errors(e: Exception) -> Exception:
        if isinstance(e, GatedRepoError):
            return ModelNotFound(f"{repo_id} is gated on the Hub: accept its terms on "
                                 f"https://huggingface.co/{repo_id} and pass a token (token=... or HF_TOKEN)")
        if isinstance(e, RepositoryNotFoundError):
            return ModelNotFound(f"there is no model repository {repo_id!r} on the Hub "
                                 "(or it is private: pass a token, token=... or HF_TOKEN)")
        if isinstance(e, RevisionNotFoundError):
            return ModelNotFound(f"{repo_id} has no revision {rev!r} on the Hub")
        if isinstance(e, RemoteEntryNotFoundError):
            return _RemoteMissing(filename)
        if isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled)) or _is_network_error(e):
            if constants.is_offline_mode():
                reason = "offline mode is on (HF_HUB_OFFLINE=1)"
            elif isinstance(e.__cause__, FileMetadataError):  # something answered, but not like the Hub
                reason = (f"{constants.ENDPOINT} did not answer like the Hugging Face Hub (a proxy, captive "
                          "portal or wrong HF_ENDPOINT?)")
            else:
                reason = f"no network (could not reach {constants.ENDPOINT})"
            return _unavailable(repo_id, filename, reason, weights_dir, size_mb)
        if isinstance(e, HfHubHTTPError):
            status = e.response.status_code if e.response is not None else "?"
            return _unavailable(repo_id, filename, f"the Hub answered HTTP {status}", weights_dir, size_mb)
        if isinstance(e, OSError) or _is_network_error(e, any_http=True):
            return _unavailable(repo_id, filename, f"the download failed ({e})", weights_dir, size_mb)
        return e

    # Without network and nothing cached, hf_hub_download retries for ~20 s before giving up. One
    # quick metadata request first makes that case fail at once (an uncached file needs it anyway).
    if not constants.is_offline_mode() and not isinstance(try_to_load_from_cache(repo_id, filename, revision=rev), str):
        try:
            get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=rev), token=token)
        except Exception as e:
            mapped = map_errors(e)
            if mapped is not e:
                raise mapped from None
            raise
    try:
        return Path(hf_hub_download(repo_id, filename, revision=rev, token=token, tqdm_class=tqdm_class,
                                    library_name="p2p_demo"))
    except Exception as e:
        mapped = map_errors(e)
        if mapped is not e:
            raise mapped from None
        raise


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
            path = _hub_file(repo_id, name, **kw)
        except _RemoteMissing:
            continue
        except HubUnavailable as e:  # offline: another layout may still be cached
            unavailable = unavailable or e
            continue
        if name == CONFIG_FILE:  # our own format: the weights sit beside the config
            try:
                _hub_file(repo_id, WEIGHTS_FILE, **kw)
            except _RemoteMissing:
                raise WeightsError(f"{repo_id} has {CONFIG_FILE} but no {WEIGHTS_FILE} on the Hub") from None
            return _load_folder(path.parent, replace(info, filename=CONFIG_FILE))
        return load_raw(path, replace(info, filename=name))
    if unavailable is not None:
        if len(candidates) > 1:  # name the repo, not the first of the files that were tried
            raise _unavailable(repo_id, None, getattr(unavailable, "reason", "no network"), weights_dir, info.size_mb)
        raise unavailable
    raise ModelNotFound(f"{repo_id} on the Hub has none of the files this app loads: {CONFIG_FILE} + {WEIGHTS_FILE} "
                        "(our format) or pytorch_model.bin / model.safetensors (a raw generator state_dict)")


# --------------------------------------------------------------------------------------------
# Public entry points


def _progress_class(progress: ProgressCallback | None, tqdm_class: Any) -> Any:
    if progress is not None and tqdm_class is not None:
        raise ValueError("pass either tqdm_class or progress, not both")
    return _callback_bar(progress) if progress is not None else tqdm_class


def _load_local(path: Path) -> tuple[Generator, ModelInfo]:
    """An existing model folder (our format) or checkpoint file (any format ``checkpoints`` reads)."""
    name = path.name if path.name not in ("", ".") else path.resolve().name
    if path.is_dir():
        return _load_folder(path, ModelInfo(id=name, source="folder", path=path))
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
    per-image statistics; it is deterministic until per-sample dropout generators are set.

    Raises ``ModelNotFound``, ``WeightsError`` or ``HubUnavailable`` (all ``LoadError``).
    """
    tqdm_class = _progress_class(progress, tqdm_class)
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
        generator, _ = _load_folder(info.path, info)
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
    return _finish(generator, device, dtype), info


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
    tqdm_class = _progress_class(progress, tqdm_class)
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
    return _finish(generator, device, dtype), info


def _line_style_dict(line_style: Any) -> dict:
    if isinstance(line_style, Mapping):
        return dict(line_style)
    if hasattr(line_style, "to_dict"):
        return dict(line_style.to_dict())
    raise TypeError(f"line_style must be a LineStyle or a dict, got {type(line_style).__name__}")


def _model_card(meta: dict, config: GeneratorConfig, dtype: torch.dtype, n_params: int) -> str:
    lic = meta["license"]
    card_license = lic if re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", lic or "") else "other"
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


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload pix2pix generator",
) -> str:
    """Upload a model folder (checked by loading it first) to a Hub model repo; returns the commit URL."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    from_pretrained(folder)  # refuse to publish something that does not load
    if not REPO_ID.match(repo_id):
        raise ValueError(f"repo_id must be 'owner/name', got {repo_id!r}")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                               allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, "*.png", "*.jpg", "training/*"])
    return str(commit.commit_url)
