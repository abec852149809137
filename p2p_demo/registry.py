"""The model registry: which models the app offers, what each one is and expects, its licence.

A model is described by a :class:`ModelInfo`: its id, the generator's architecture, the line style
and kind of input it was trained on, metrics, licence and where its weights are. Descriptions come
from ``weights/registry.json`` (bundled folders and known Hub models) and from each model folder's
``config.json`` (our own format, docs/CONTRACTS.md). :func:`list_models` reads them without
loading any weights and without the network.

The errors every loader raises on purpose (``LoadError`` and its kinds) live here too, so the
registry, ``p2p_demo.checkpoints`` and ``p2p_demo.hub`` share them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import P2PError
from .nets import GeneratorConfig

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
REGISTRY_FILE = "registry.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"

SOURCES = ("bundled", "hub", "file", "folder")
INPUT_KINDS = ("edges", "image")
UNKNOWN_LICENSE = "unknown (see model card)"

# "owner/name": stricter than huggingface_hub's validate_repo_id, which also accepts a bare name;
# here a bare name is a registry id or a local path, never a Hub repo.
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# --------------------------------------------------------------------------------------------
# Errors


class LoadError(P2PError):
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


def default_dropout_sampling(config: GeneratorConfig) -> bool:
    """Whether a model that does not say samples with dropout on: the habit of its layout's authors
    (the reference's test mode keeps dropout on; the huggan models were published for eval mode)."""
    return config.layout == "reference"


# --------------------------------------------------------------------------------------------
# Registry


def _registry_path(weights_dir: str | os.PathLike | None) -> Path:
    return Path(weights_dir or WEIGHTS_DIR) / REGISTRY_FILE


def read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise WeightsError(f"{path}: {what} is not UTF-8 text ({e.reason} at byte {e.start})") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path}: {what} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from e


def registry_entries(weights_dir: str | os.PathLike | None) -> list[dict]:
    path = _registry_path(weights_dir)
    if not path.is_file():
        return []
    doc = read_json(path, "the model registry")
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
        if source == "hub" and not (isinstance(m.get("repo_id"), str) and REPO_ID.match(m["repo_id"])):
            raise WeightsError(f"{path}: {mid}: a Hub entry needs 'repo_id' as 'owner/name'")
        try:
            info_from_entry(m)
        except (TypeError, ValueError) as e:
            raise WeightsError(f"{path}: {mid}: {e}") from None
    return models


_ENTRY_INFO_KEYS = ("name", "description", "expects", "license", "input", "metrics", "line_style",
                    "data", "notes", "dropout_sampling", "size_mb")


def info_from_entry(entry: dict) -> ModelInfo:
    """A registry entry's description (before anything is read from disk or the Hub)."""
    kw = {k: entry[k] for k in _ENTRY_INFO_KEYS if k in entry}
    info = ModelInfo(id=entry["id"], source=entry["source"], **kw)
    if entry.get("generator") is not None:
        info.generator = GeneratorConfig.from_dict(entry["generator"])
        if "dropout_sampling" not in entry:
            info.dropout_sampling = default_dropout_sampling(info.generator)
    if entry["source"] == "hub":
        info.repo_id = entry["repo_id"]
        info.revision = entry.get("revision", "main")
        info.filename = entry.get("filename", WEIGHTS_FILE)
    return info


def bundled_info(entry: dict, weights_dir: Path) -> ModelInfo:
    """A bundled model as listed: its folder's config.json wins over the registry's text."""
    info = info_from_entry(entry)
    folder = weights_dir / entry.get("folder", entry["id"])
    info.path = folder
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / f).is_file()]
        what = f"{short_path(folder)}/ is missing" if not folder.is_dir() else f"{short_path(folder)}/ has no {' or '.join(missing)}"
        info.available = False
        info.problem = (f"bundled model {info.id!r} is not installed: {what}. Bundled weights are "
                        "produced by the training pipeline (train/) and committed under weights/.")
        return info
    try:
        config, meta = read_model_config(folder / CONFIG_FILE)
    except WeightsError as e:
        info.available = False
        info.problem = str(e)
        return info
    merged = info_from_meta(meta, config, id=info.id, source="bundled", path=folder, default_name=info.name or info.id)
    # The registry may describe a model whose card leaves a field empty; never the other way round.
    for k in ("description", "expects", "data", "notes"):
        if not getattr(merged, k) and getattr(info, k):
            setattr(merged, k, getattr(info, k))
    if merged.license == UNKNOWN_LICENSE and info.license != UNKNOWN_LICENSE:
        merged.license = info.license
    return merged


def short_path(path: Path) -> str:
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
    for entry in registry_entries(wdir):
        if entry["source"] == "bundled":
            registered_folders.add(entry.get("folder", entry["id"]))
            out.append(bundled_info(entry, wdir))
        else:
            info = info_from_entry(entry)
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
                out.append(bundled_info({"id": folder.name, "source": "bundled", "folder": folder.name}, wdir))
    return out


def available_bundled(weights_dir: str | os.PathLike | None) -> list[str]:
    try:
        return [m.id for m in list_models(weights_dir) if m.source == "bundled" and m.available]
    except LoadError:
        return []


# --------------------------------------------------------------------------------------------
# Model folders' config.json


def read_model_config(path: Path) -> tuple[GeneratorConfig, dict]:
    doc = read_json(path, "the model config")
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


def info_from_meta(meta: dict, config: GeneratorConfig, *, id: str, source: str, path: Path,
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
        dropout_sampling=bool(meta.get("dropout_sampling", default_dropout_sampling(config))),
    )
