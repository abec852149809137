"""Where weights come from: bundled folders in weights/, local files, and the Hugging Face Hub.

One entry point, :func:`load_generator`, takes any of

* a registry id (``weights/registry.json``): a bundled model folder or a known Hub model;
* a Hub repo id ``owner/name``: our own format, or a raw checkpoint (``pytorch_model.bin``);
* a local model folder (``config.json`` + ``model.safetensors``, see docs/CONTRACTS.md);
* a checkpoint file: ``.pth`` / ``.bin`` (a pickled state_dict) or ``.safetensors``.

Raw checkpoints carry no config, so the architecture is read from their keys and shapes: the
authors' nested ``model.model.1.model.3...`` layout (any ngf, depth, batch or instance norm) and
the Hub's flat ``huggan`` layout. Loading is strict: every key, shape and dtype must match, and a
mismatch is reported with the file name and the first differing keys. Pickles are opened only with
``torch.load(weights_only=True)``; one that needs to run code is refused, never executed.

Hub downloads go through ``huggingface_hub`` (its cache, ``HF_HOME``, ``HF_HUB_OFFLINE``). Nothing
happens at import: no downloads, no CUDA calls, no prints.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .nets import Generator, GeneratorConfig, build_generator

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
REGISTRY_FILE = "registry.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"

SOURCES = ("bundled", "hub", "file", "folder")
INPUT_KINDS = ("edges", "image")
UNKNOWN_LICENSE = "unknown (see model card)"

# Raw checkpoints are recognised by content, not by extension; these are only for messages.
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
# Top-level keys under which training scripts commonly nest the generator's state_dict.
WRAPPER_KEYS = ("state_dict", "generator", "netG", "G", "model", "model_state_dict", "generator_state_dict")
# Files tried, in order, for a Hub repo that is not in the registry.
HUB_CANDIDATES = (CONFIG_FILE, "pytorch_model.bin", WEIGHTS_FILE)

ProgressCallback = Callable[[int, "int | None", str], None]  # (bytes done, total bytes or None, file name)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# --------------------------------------------------------------------------------------------
# Errors


class LoadError(Exception):
    """Base of every error this module raises on purpose; the message says what to do."""


class WeightsError(LoadError, ValueError):
    """Weights that cannot be used: corrupt, unsafe, or not matching the network they claim."""


class ModelNotFound(LoadError, LookupError):
    """The spec names nothing: unknown id, missing file, bundled model not installed, no such repo."""


class HubUnavailable(LoadError, ConnectionError):
    """A Hub model is needed but cannot be downloaded (offline or no network) and is not cached."""

    reason: str = ""  # the short cause, e.g. "offline mode is on (HF_HUB_OFFLINE=1)"


# --------------------------------------------------------------------------------------------
# Model description


@dataclass
class ModelInfo:
    """What a model is, what it expects, and where its weights are."""

    id: str
    name: str = ""
    description: str = ""
    expects: str = ""  # e.g. "shoe outlines, black on white"
    license: str = UNKNOWN_LICENSE
    source: str = "file"  # bundled | hub | file | folder
    generator: GeneratorConfig | None = None  # None only for a listed model that is not available
    line_style: dict = field(default_factory=dict)  # LineStyle.to_dict(); {} = the default style
    input: str = "edges"  # edges | image
    metrics: dict = field(default_factory=dict)
    path: Path | None = None  # the local folder or file the weights were (or will be) read from
    repo_id: str | None = None
    revision: str | None = None
    filename: str | None = None
    size_mb: float | None = None  # download size, when known
    data: str = ""  # what it was trained on
    notes: str = ""
    # Whether its authors sample with dropout on at test time (the reference's test mode). The
    # huggan models were published for eval mode, i.e. dropout off.
    dropout_sampling: bool = True
    available: bool = True
    problem: str = ""  # why it is not available
    cached: bool | None = None  # Hub models: already in the local Hugging Face cache

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.input not in INPUT_KINDS:
            raise ValueError(f"input must be one of {INPUT_KINDS}, got {self.input!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["generator"] = self.generator.to_dict() if self.generator else None
        d["path"] = str(self.path) if self.path else None
        return d


# --------------------------------------------------------------------------------------------
# Registry


def _registry_path(weights_dir: str | os.PathLike | None) -> Path:
    return Path(weights_dir or WEIGHTS_DIR) / REGISTRY_FILE


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise WeightsError(f"{path}: {what} is not UTF-8 text ({e.reason} at byte {e.start})") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path}: {what} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from e


def _registry_entries(weights_dir: str | os.PathLike | None) -> list[dict]:
    path = _registry_path(weights_dir)
    if not path.is_file():
        return []
    doc = _read_json(path, "the model registry")
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise WeightsError(f'{path}: expected {{"models": [{{"id": ..., "source": ...}}, ...]}}')
    seen: set[str] = set()
    for i, m in enumerate(models):
        mid, source = m.get("id"), m.get("source")
        if not isinstance(mid, str) or not mid:
            raise WeightsError(f"{path}: models[{i}] has no 'id'")
        if mid in seen:
            raise WeightsError(f"{path}: model id {mid!r} is listed twice")
        seen.add(mid)
        if source not in ("bundled", "hub"):
            raise WeightsError(f"{path}: {mid}: 'source' must be 'bundled' or 'hub', got {source!r}")
        if source == "hub" and not (isinstance(m.get("repo_id"), str) and _REPO_ID.match(m["repo_id"])):
            raise WeightsError(f"{path}: {mid}: a Hub entry needs 'repo_id' as 'owner/name'")
        try:
            _info_from_entry(m)
        except (TypeError, ValueError) as e:
            raise WeightsError(f"{path}: {mid}: {e}") from None
    return models


_ENTRY_INFO_KEYS = ("name", "description", "expects", "license", "input", "metrics", "line_style",
                    "data", "notes", "dropout_sampling", "size_mb")


def _info_from_entry(entry: dict) -> ModelInfo:
    """A registry entry's description (before anything is read from disk or the Hub)."""
    kw = {k: entry[k] for k in _ENTRY_INFO_KEYS if k in entry}
    info = ModelInfo(id=entry["id"], source=entry["source"], **kw)
    if entry.get("generator") is not None:
        info.generator = GeneratorConfig.from_dict(entry["generator"])
        if "dropout_sampling" not in entry:
            info.dropout_sampling = info.generator.layout == "reference"
    if entry["source"] == "hub":
        info.repo_id = entry["repo_id"]
        info.revision = entry.get("revision", "main")
        info.filename = entry.get("filename", WEIGHTS_FILE)
    return info


def _bundled_info(entry: dict, weights_dir: Path) -> ModelInfo:
    """A bundled model as listed: its folder's config.json wins over the registry's text."""
    info = _info_from_entry(entry)
    folder = weights_dir / entry.get("folder", entry["id"])
    info.path = folder
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / f).is_file()]
        what = f"{_short(folder)}/ is missing" if not folder.is_dir() else f"{_short(folder)}/ has no {' or '.join(missing)}"
        info.available = False
        info.problem = (f"bundled model {info.id!r} is not installed: {what}. Bundled weights are "
                        "produced by the training pipeline (train/) and committed under weights/.")
        return info
    try:
        config, meta = _read_model_config(folder / CONFIG_FILE)
    except WeightsError as e:
        info.available = False
        info.problem = str(e)
        return info
    merged = _info_from_meta(meta, config, id=info.id, source="bundled", path=folder, default_name=info.name or info.id)
    # The registry may describe a model whose card leaves a field empty; never the other way round.
    for k in ("description", "expects", "data", "notes"):
        if not getattr(merged, k) and getattr(info, k):
            setattr(merged, k, getattr(info, k))
    if merged.license == UNKNOWN_LICENSE and info.license != UNKNOWN_LICENSE:
        merged.license = info.license
    return merged


def _short(path: Path) -> str:
    """A path relative to the project when it is inside it (friendlier in messages)."""
    try:
        return str(path.resolve().relative_to(WEIGHTS_DIR.parent))
    except ValueError:
        return str(path)


def _hub_cached(repo_id: str, filename: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, filename, revision=revision), str)
    except Exception:  # a broken cache must not break listing
        return False


def list_models(weights_dir: str | os.PathLike | None = None) -> list[ModelInfo]:
    """Every registry model plus any unregistered model folder under weights/.

    Never downloads anything and never raises for a missing or broken bundled model: such a model
    is listed with ``available=False`` and ``problem`` saying why. (A malformed registry.json
    itself is a ``WeightsError``.)
    """
    wdir = Path(weights_dir or WEIGHTS_DIR)
    out: list[ModelInfo] = []
    registered_folders: set[str] = set()
    for entry in _registry_entries(wdir):
        if entry["source"] == "bundled":
            registered_folders.add(entry.get("folder", entry["id"]))
            out.append(_bundled_info(entry, wdir))
        else:
            info = _info_from_entry(entry)
            info.cached = _hub_cached(info.repo_id, info.filename, info.revision)
            out.append(info)
    # Folders dropped into weights/ without a registry entry still show up. Only folders whose
    # config.json describes a generator count (weights/hed/ holds the edge detector, for example).
    if wdir.is_dir():
        for folder in sorted(p for p in wdir.iterdir() if p.is_dir() and p.name not in registered_folders):
            cfg = folder / CONFIG_FILE
            if not cfg.is_file():
                continue
            try:
                doc = json.loads(cfg.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict) and "generator" in doc:
                out.append(_bundled_info({"id": folder.name, "source": "bundled", "folder": folder.name}, wdir))
    return out


def _available_bundled(weights_dir: str | os.PathLike | None) -> list[str]:
    try:
        return [m.id for m in list_models(weights_dir) if m.source == "bundled" and m.available]
    except LoadError:
        return []


# --------------------------------------------------------------------------------------------
# Reading weight files


def _fmt_shape(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def _first(items: list[str], n: int = 5) -> str:
    more = f", ... (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read a checkpoint file into a plain {name: tensor} dict; returns it and a note on unwrapping.

    The format is recognised from the first bytes, not the extension: safetensors, a PyTorch zip
    checkpoint, or a legacy (pre-1.6) PyTorch pickle.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise WeightsError(f"{path}: cannot be read ({e.strerror or e})") from e
    if size == 0:
        raise WeightsError(f"{path} is empty (0 bytes); download or save it again")
    if head.startswith(b"version https://git-lfs"):
        raise WeightsError(f"{path} is a Git LFS pointer ({size} bytes), not the weights: fetch the real file "
                           "with `git lfs pull` (or download it from the web page)")
    if head.lstrip()[:1] == b"<":
        raise WeightsError(f"{path} is a web page (HTML), not weights: download the file itself, not the page")
    if len(head) >= 10 and head[8:10] in (b'{"', b"{}"):
        return _read_safetensors(path), ""
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return _unwrap(_read_pickle(path), path)
    hint = " (a .safetensors name but not safetensors content)" if path.suffix == ".safetensors" else ""
    raise WeightsError(f"{path} is not a checkpoint format this app reads{hint}: expected safetensors or a "
                       f"PyTorch .pth/.bin state_dict; its first bytes are {head[:12]!r}")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except SafetensorError as e:
        raise WeightsError(f"{path}: the safetensors file is truncated or corrupt ({e}); "
                           "download or save it again") from e


def _read_pickle(path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own advice to retry with weights_only=False
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" not in msg:
            raise WeightsError(f"{path}: cannot be read: the pickle is corrupt ({msg[:200]})") from e
        glob = re.search(r"Unsupported global: GLOBAL (\S+)", msg)
        if glob:
            what = f"it asks to import and call `{glob.group(1)}`"
        else:
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", msg)
            what = f"the safe unpickler stopped at: {detail.group(1).strip() if detail else 'an unsupported object'}"
        raise WeightsError(
            f"{path}: refused: it needs arbitrary code to load (not a plain state_dict); {what}. "
            "Only tensors in a dict (a state_dict) or safetensors are loaded here, never pickled code. "
            "If you trust its source, re-save it elsewhere as "
            "`torch.save(model.state_dict(), 'generator.pth')` and load that."
        ) from None
    except RuntimeError as e:
        if "TorchScript" in str(e):
            raise WeightsError(f"{path} is a TorchScript archive, not a state_dict; export the generator's "
                               "state_dict (or safetensors) instead") from None
        raise WeightsError(f"{path}: cannot be read as a PyTorch checkpoint: it is truncated or corrupt "
                           f"({str(e).splitlines()[0][:160]}); download or save it again") from e
    except Exception as e:  # truncated zips surface as OSError/EOFError/struct errors
        raise WeightsError(f"{path}: cannot be read as a PyTorch checkpoint: it is truncated or corrupt "
                           f"({type(e).__name__}: {str(e)[:160]}); download or save it again") from e


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state_dict inside what torch.load returned, if that is unambiguous."""
    note = ""
    if _is_tensor_dict(obj):
        sd = dict(obj)
    elif isinstance(obj, Mapping):
        found = [k for k in WRAPPER_KEYS if k in obj and _is_tensor_dict(obj[k])]
        if len(found) > 1:
            raise WeightsError(f"{path} holds several state_dicts ({', '.join(found)}); save only the generator's")
        if not found:
            entries = [f"{k} ({type(v).__name__})" for k, v in list(obj.items())]
            raise WeightsError(f"{path} is a dict but not a state_dict (names -> tensors): its entries are "
                               f"{_first(entries) or 'none'}")
        sd = dict(obj[found[0]])
        note = f"state_dict read from the {found[0]!r} entry"
        if isinstance(obj.get("generator_config"), Mapping):  # a training checkpoint of ours says what it holds
            sd[_CONFIG_HINT] = dict(obj["generator_config"])  # type: ignore[assignment]
    else:
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")
    prefixed = [k for k in sd if k.startswith("module.")]
    if prefixed and len(prefixed) == len(sd) - (_CONFIG_HINT in sd):
        # Saved from a DataParallel/DDP wrapper: the prefix is the wrapper's, not the network's.
        sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
        note = (note + "; " if note else "") + "'module.' prefix removed"
    elif prefixed:
        raise WeightsError(f"{path} mixes keys with and without the 'module.' prefix "
                           f"(e.g. {prefixed[0]!r} and {next(k for k in sd if not k.startswith('module.'))!r})")
    return sd, note


_CONFIG_HINT = "\0generator_config"  # rides along in the dict from _unwrap to _load_raw; never a real key


# --------------------------------------------------------------------------------------------
# Recognising the architecture of a raw checkpoint


def _describe(config: GeneratorConfig) -> str:
    if config.layout == "huggan":
        kind = "a huggan U-Net"
    else:
        kind = {8: "a reference unet_256", 7: "a reference unet_128"}.get(config.num_downs, "a reference U-Net")
    up = ", resize-conv decoder" if config.upsample == "resize" else ""
    return (f"{kind} (ngf={config.ngf}, num_downs={config.num_downs}, {config.norm} norm{up}, "
            f"{config.in_channels}->{config.out_channels} channels)")


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> GeneratorConfig:
    """The GeneratorConfig of a raw generator state_dict, read from its keys and shapes.

    Reference layout: depth = number of nested levels, ngf and in/out channels from the first and
    last convolutions, batch norm if there are norm weights (instance norm has none but has conv
    biases). Dropout has no weights; it is on for depth >= 6, as in the reference. Raises
    WeightsError (without a file name) if the keys are neither layout.
    """
    sd = state_dict

    def w(key: str, ndim: int = 4) -> torch.Tensor:
        t = sd.get(key)
        if not isinstance(t, torch.Tensor) or t.dim() != ndim:
            raise WeightsError(f"{key} should be a {ndim}-D tensor, found {_fmt_shape(t) if t is not None else 'nothing'}")
        return t

    if "model.model.0.weight" in sd:
        first = w("model.model.0.weight")
        ngf, cin = first.shape[0], first.shape[1]
        last = sd.get("model.model.3.weight")
        cout = last.shape[1] if isinstance(last, torch.Tensor) and last.dim() == 4 else 3
        level, depth = "model.model.1.model.", 2
        if level + "1.weight" not in sd:
            raise WeightsError("reference layout without a second level (no model.model.1.model.1.weight)")
        while level + "3.model.1.weight" in sd:
            level += "3.model."
            depth += 1
        if any(k.endswith(".running_mean") for k in sd) or "model.model.1.model.2.weight" in sd:
            norm = "batch"
        elif "model.model.0.bias" in sd:
            norm = "instance"
        else:
            norm = "batch"  # the strict load will then name the missing norm keys
        if depth < 5:
            raise WeightsError(f"reference layout with only {depth} levels; at least 5 are supported")
        return GeneratorConfig(in_channels=cin, out_channels=cout, ngf=ngf, num_downs=depth, norm=norm,
                               dropout=depth >= 6, layout="reference")
    if "down1.model.0.weight" in sd:
        first = w("down1.model.0.weight")
        final = sd.get("final.2.weight")
        cout = final.shape[0] if isinstance(final, torch.Tensor) and final.dim() == 4 else 3
        return GeneratorConfig(in_channels=first.shape[1], out_channels=cout, ngf=first.shape[0], num_downs=8,
                               norm="instance", dropout=True, layout="huggan")
    keys = list(sd)
    first6 = sd.get("model.0.weight")
    if isinstance(first6, torch.Tensor) and first6.dim() == 4 and "model.0.bias" in sd:
        raise WeightsError(f"this is a PatchGAN discriminator ({first6.shape[1]} input channels), not a "
                           "generator: load the generator checkpoint (e.g. latest_net_G.pth, not latest_net_D.pth)")
    raise WeightsError(
        "not a pix2pix generator layout this app knows: expected the reference keys "
        "(model.model.0.weight, model.model.1.model.1.weight, ...) or the huggan keys (down1.model.0.weight, "
        f"..., final.2.weight); its {len(keys)} keys begin {_first([f'{k} {_fmt_shape(sd[k])}' for k in keys], 4)}"
    )


def _check_and_load(generator: Generator, sd: dict[str, torch.Tensor], source: Path | str) -> None:
    """Strict load with a readable diff: keys, shapes, dtypes and non-finite values."""
    expected = generator.state_dict()
    sd = dict(sd)
    # Checkpoints saved before PyTorch 0.4.1 have no num_batches_tracked; it is a counter that
    # inference never reads, so it is the one key allowed to be absent.
    for k, t in expected.items():
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = torch.zeros_like(t)
    missing = [f"{k} {_fmt_shape(expected[k])}" for k in expected if k not in sd]
    unexpected = [f"{k} {_fmt_shape(sd[k])}" for k in sd if k not in expected]
    not_tensor = [f"{k} ({type(v).__name__})" for k, v in sd.items() if k in expected and not isinstance(v, torch.Tensor)]
    shapes = [f"{k} is {tuple(sd[k].shape)} in the file, the network needs {tuple(t.shape)}"
              for k, t in expected.items()
              if isinstance(sd.get(k), torch.Tensor) and sd[k].shape != t.shape]
    dtypes = []
    for k, t in expected.items():
        v = sd.get(k)
        if not isinstance(v, torch.Tensor):
            continue
        ok = v.is_floating_point() if t.is_floating_point() else (not v.is_floating_point() and not v.is_complex()
                                                                  and v.dtype != torch.bool)
        if not ok:
            dtypes.append(f"{k} is {v.dtype}, expected {'a floating-point' if t.is_floating_point() else 'an integer'} tensor")
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {_first(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {_first(unexpected)}")
    if not_tensor:
        parts.append(f"{len(not_tensor)} not tensors: {_first(not_tensor)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches: {_first(shapes, 3)}")
    if dtypes:
        parts.append(f"{len(dtypes)} wrong dtypes: {_first(dtypes, 3)}")
    if parts:
        raise WeightsError(f"{source} does not match {_describe(generator.config)}:\n  " + "\n  ".join(parts))
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise WeightsError(f"{source}: {len(bad)} tensors contain NaN or infinite values ({_first(bad, 3)}); "
                           "the training run that wrote them had diverged")
    generator.load_state_dict(sd, strict=True)


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


def _read_model_config(path: Path) -> tuple[GeneratorConfig, dict]:
    doc = _read_json(path, "the model config")
    if not isinstance(doc, dict):
        raise WeightsError(f"{path}: expected a JSON object, found {type(doc).__name__}")
    if not isinstance(doc.get("generator"), dict):
        raise WeightsError(f'{path}: has no "generator" section; a model config is {{"generator": {{...}}, '
                           '"line_style": {...}, "input": "edges", ...}} (docs/CONTRACTS.md)')
    try:
        config = GeneratorConfig.from_dict(doc["generator"])
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{path}: generator: {e}") from e
    if doc.get("input", "edges") not in INPUT_KINDS:
        raise WeightsError(f"{path}: input must be one of {INPUT_KINDS}, got {doc.get('input')!r}")
    for key in ("line_style", "metrics"):
        if not isinstance(doc.get(key, {}), dict):
            raise WeightsError(f"{path}: {key} must be a JSON object, got {type(doc[key]).__name__}")
    return config, doc


def _info_from_meta(meta: dict, config: GeneratorConfig, *, id: str, source: str, path: Path,
                    default_name: str) -> ModelInfo:
    return ModelInfo(
        id=id,
        name=str(meta.get("name") or default_name),
        description=str(meta.get("description", "")),
        expects=str(meta.get("expects", "")),
        license=str(meta.get("license") or UNKNOWN_LICENSE),
        source=source,
        generator=config,
        line_style=dict(meta.get("line_style") or {}),
        input=meta.get("input", "edges"),
        metrics=dict(meta.get("metrics") or {}),
        path=path,
        data=str(meta.get("data", "")),
        notes=str(meta.get("notes", "")),
        dropout_sampling=bool(meta.get("dropout_sampling", config.layout == "reference")),
    )


def _load_folder(folder: Path, info: ModelInfo) -> tuple[Generator, ModelInfo]:
    cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not cfg_path.is_file():
        if w_path.is_file():
            raise WeightsError(f"{folder} has {WEIGHTS_FILE} but no {CONFIG_FILE}: a model folder needs both "
                               f"(docs/CONTRACTS.md). To load bare weights, pass the file itself: {w_path}")
        found = sorted(p.name for p in folder.iterdir())[:6] if folder.is_dir() else []
        raise WeightsError(f"{folder} is not a model folder: it needs {CONFIG_FILE} + {WEIGHTS_FILE}"
                           + (f" (it holds {', '.join(found)})" if found else " (it is empty)"))
    config, meta = _read_model_config(cfg_path)
    if not w_path.is_file():
        raise WeightsError(f"{folder} has {CONFIG_FILE} but no {WEIGHTS_FILE}")
    sd, _ = _read_state_dict(w_path)
    generator = build_generator(config)
    _check_and_load(generator, sd, w_path)
    full = _info_from_meta(meta, config, id=info.id, source=info.source, path=folder, default_name=info.name or info.id)
    full.repo_id, full.revision, full.size_mb = info.repo_id, info.revision, info.size_mb
    full.filename = info.filename if info.source == "hub" else None
    return generator, full


def _load_raw(path: Path, info: ModelInfo) -> tuple[Generator, ModelInfo]:
    sd, note = _read_state_dict(path)
    hint = sd.pop(_CONFIG_HINT, None)
    from_registry = info.generator is not None
    try:
        config = infer_config(sd)
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None
    if hint is not None and info.generator is None:
        try:
            info = replace(info, generator=GeneratorConfig.from_dict(hint))
        except (TypeError, ValueError) as e:
            raise WeightsError(f"{path}: its generator_config is invalid: {e}") from None
    if info.generator is not None:
        # The registry (or the checkpoint's own config) states the architecture; the weights must
        # agree. Dropout has no weights, so the stated value wins.
        if replace(info.generator, dropout=config.dropout) != config:
            said = f"the registry says for {info.id}" if from_registry else "its generator_config says"
            raise WeightsError(f"{path} holds {_describe(config)}, but {said} {_describe(info.generator)}")
        config = info.generator
    generator = build_generator(config)
    _check_and_load(generator, sd, path)
    if not from_registry:  # otherwise the registry said; here, the habit of the layout's authors
        info = replace(info, dropout_sampling=config.layout == "reference")
    info = replace(info, generator=config, path=path)
    if note:
        log.info("%s: %s", path, note)
        info.notes = f"{info.notes}; {note}" if info.notes else note
    return generator, info


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
    bundled = _available_bundled(weights_dir)
    err = HubUnavailable(
        f"{repo_id}{f' ({what})' if what else ''} could not be downloaded: {reason}, and it is not in the "
        f"Hugging Face cache ({constants.HF_HUB_CACHE}). Bundled models still work: "
        f"{', '.join(bundled) if bundled else 'none is installed'}. To use this model, connect once "
        "(it stays cached under HF_HOME) or copy that cache folder from a machine that has it."
    )
    err.reason = reason
    return err


def _is_network_error(e: BaseException, *, any_http: bool = False) -> bool:
    """A connection-level failure, whichever HTTP client this huggingface_hub version uses."""
    names = {c.__name__ for c in type(e).__mro__}
    if names & {"ConnectError", "TimeoutException", "NetworkError", "ConnectionError", "Timeout", "ProxyError"}:
        return True
    return any_http and bool(names & {"HTTPError", "RequestException", "TransportError"})


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


def _load_hub(repo_id: str, info: ModelInfo, *, token: Any, tqdm_class: Any, weights_dir: Any) -> tuple[Generator, ModelInfo]:
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
        return _load_raw(path, replace(info, filename=name))
    if unavailable is not None:
        if len(candidates) > 1:  # name the repo, not the first of the files that were tried
            raise _unavailable(repo_id, None, getattr(unavailable, "reason", "no network"), weights_dir, info.size_mb)
        raise unavailable
    raise ModelNotFound(f"{repo_id} on the Hub has none of the files this app loads: {CONFIG_FILE} + {WEIGHTS_FILE} "
                        "(our format) or pytorch_model.bin / model.safetensors (a raw generator state_dict)")


# --------------------------------------------------------------------------------------------
# Public entry points


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
    if progress is not None and tqdm_class is not None:
        raise ValueError("pass either tqdm_class or progress, not both")
    if progress is not None:
        tqdm_class = _callback_bar(progress)
    wdir = Path(weights_dir or WEIGHTS_DIR)
    text = os.fspath(spec)
    entries = {e["id"]: e for e in _registry_entries(wdir)}

    if text in entries:
        entry = entries[text]
        if entry["source"] == "bundled":
            info = _bundled_info(entry, wdir)  # config.json merged with the registry's text
            if not info.available:
                others = [m for m in _available_bundled(wdir) if m != info.id]
                raise ModelNotFound(info.problem + (f" Available now: {', '.join(others)}." if others else ""))
            generator, _ = _load_folder(info.path, info)
        else:
            info = _info_from_entry(entry)
            if revision:
                info.revision = revision
            generator, info = _load_hub(info.repo_id, info, token=token, tqdm_class=tqdm_class, weights_dir=wdir)
        return _finish(generator, device, dtype), info

    path = Path(text).expanduser()
    if path.exists():
        name = path.name if path.name not in ("", ".") else path.resolve().name
        if path.is_dir():
            generator, info = _load_folder(path, ModelInfo(id=name, source="folder", path=path))
        else:
            generator, info = _load_raw(path, ModelInfo(id=name, name=path.stem, source="file", path=path))
        return _finish(generator, device, dtype), info

    # "weights/openmoji" with weights/ present is a mistyped local path, not a Hub repo.
    looks_like_path = (text.startswith((".", "/", "~")) or "\\" in text or path.suffix.lower() in CHECKPOINT_SUFFIXES
                       or (len(path.parts) > 1 and path.parent.is_dir()))
    if _REPO_ID.match(text) and not looks_like_path:
        hub_entry = next((e for e in entries.values() if e["source"] == "hub" and e["repo_id"] == text), None)
        info = _info_from_entry(hub_entry) if hub_entry else ModelInfo(id=text, name=text.split("/")[1], source="hub")
        if revision:
            info.revision = revision
        generator, info = _load_hub(text, info, token=token, tqdm_class=tqdm_class, weights_dir=wdir)
        return _finish(generator, device, dtype), info

    known = ", ".join(entries) or "none"
    if looks_like_path or len(path.parts) > 2:
        raise ModelNotFound(f"no such file or folder: {text}")
    raise ModelNotFound(f"unknown model {text!r}: not a registry id (known: {known}), not an existing file or "
                        "folder, and not a Hub repo id (owner/name)")


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
    """Load a model in our own format (config.json + model.safetensors) from a folder or a Hub repo."""
    if progress is not None:
        tqdm_class = _callback_bar(progress)
    path = Path(folder_or_repo_id).expanduser()
    if path.is_dir():
        generator, info = _load_folder(path, ModelInfo(id=path.resolve().name, source="folder", path=path))
    elif path.exists():
        raise WeightsError(f"{path} is a file; from_pretrained reads model folders (config.json + "
                           f"{WEIGHTS_FILE}). Use load_generator() for raw checkpoints")
    elif _REPO_ID.match(os.fspath(folder_or_repo_id)):
        repo_id = os.fspath(folder_or_repo_id)
        info = ModelInfo(id=repo_id, name=repo_id.split("/")[1], source="hub", revision=revision, filename=CONFIG_FILE)
        generator, info = _load_hub(repo_id, info, token=token, tqdm_class=tqdm_class, weights_dir=None)
    else:
        raise ModelNotFound(f"no such folder, and not a Hub repo id (owner/name): {folder_or_repo_id}")
    return _finish(generator, device, dtype), info


def _line_style_dict(line_style: Any) -> dict:
    if isinstance(line_style, Mapping):
        return dict(line_style)
    if hasattr(line_style, "to_dict"):
        return dict(line_style.to_dict())
    raise TypeError(f"line_style must be a LineStyle or a dict, got {type(line_style).__name__}")


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
              f"{_describe(config)[0].upper()}{_describe(config)[1:]}, dropout {'on' if config.dropout else 'off'}; "
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
    _atomic_write(folder / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    _atomic_write(folder / CONFIG_FILE, lambda p: p.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"))
    _atomic_write(folder / CARD_FILE, lambda p: p.write_text(_model_card(meta, config, dtype, n_params), encoding="utf-8"))
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
    if not _REPO_ID.match(repo_id):
        raise ValueError(f"repo_id must be 'owner/name', got {repo_id!r}")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                               allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, "*.png", "*.jpg", "training/*"])
    return str(commit.commit_url)
