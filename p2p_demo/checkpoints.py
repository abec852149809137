"""Foreign checkpoints: the authors' ``.pth``, the Hub's huggan ``pytorch_model.bin``, any state_dict.

A file's format is recognised from its first bytes, not its name: safetensors, a PyTorch zip
checkpoint or a legacy pickle. Pickles are opened only with ``torch.load(weights_only=True)``; one
that needs to run code is refused, never executed. Raw checkpoints carry no config, so
:func:`infer_config` reads the architecture from their keys and shapes: the authors' nested
``model.model.1.model.3...`` layout (any ngf, depth, batch or instance norm) and the flat huggan
layout. :func:`check_and_load` is strict: every key, shape and dtype must match, and a mismatch is
reported with the file name and the first differing keys.
"""

from __future__ import annotations

import logging
import pickle
import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import torch

from .nets import Generator, GeneratorConfig, build_generator
from .registry import ModelInfo, WeightsError, default_dropout_sampling

log = logging.getLogger(__name__)

# Raw checkpoints are recognised by content, not by extension; these are only for messages.
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
# Top-level keys under which training scripts commonly nest the generator's state_dict.
WRAPPER_KEYS = ("state_dict", "generator", "netG", "G", "model", "model_state_dict", "generator_state_dict")


# --------------------------------------------------------------------------------------------
# Reading weight files


def _fmt_shape(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def _first(items: list[str], n: int = 5) -> str:
    more = f", ... (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
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


_CONFIG_HINT = "\0generator_config"  # rides along in the dict from _unwrap to load_raw; never a real key


# --------------------------------------------------------------------------------------------
# Recognising the architecture of a raw checkpoint


def describe(config: GeneratorConfig) -> str:
    if config.layout == "huggan":
        kind = "a huggan U-Net"
    else:
        kind = {8: "a reference unet_256", 7: "a reference unet_128"}.get(config.num_downs, "a reference U-Net")
    up = ", resize-conv decoder" if config.upsample == "resize" else ""
    if config.dropout:
        up += ", channel dropout" if config.channel_dropout else ""
        up += f", dropout in {config.dropout_levels} decoder levels" if config.dropout_levels else ""
    return (f"{kind} (ngf={config.ngf}, num_downs={config.num_downs}, {config.norm} norm{up}, "
            f"{config.in_channels}->{config.out_channels} channels)")


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> GeneratorConfig:
    """The GeneratorConfig of a raw generator state_dict, read from its keys and shapes.

    Reference layout: depth = number of nested levels, ngf and in/out channels from the first and
    last convolutions, batch norm if there are norm weights (instance norm has none but has conv
    biases), a resize-conv decoder if the outermost up step is one. Dropout has no weights; it is on
    for depth >= 6, as in the reference. Raises WeightsError (without a file name) if the keys are
    neither layout.
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
        # the outermost decoder step: a transposed convolution (in, out, 4, 4), or a resize-conv
        # decoder's nearest x2 + convolution (out, in, 3, 3) one index deeper (nets.ResizeUp)
        last = sd.get("model.model.3.weight")
        upsample = "transpose"
        if not isinstance(last, torch.Tensor) and isinstance(sd.get("model.model.3.1.weight"), torch.Tensor):
            last, upsample = sd["model.model.3.1.weight"], "resize"
        if isinstance(last, torch.Tensor) and last.dim() == 4:
            cout = last.shape[0] if upsample == "resize" else last.shape[1]
        else:
            cout = 3
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
                               dropout=depth >= 6, layout="reference", upsample=upsample)
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


def check_and_load(generator: Generator, sd: dict[str, torch.Tensor], source: Path | str) -> None:
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
        raise WeightsError(f"{source} does not match {describe(generator.config)}:\n  " + "\n  ".join(parts))
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise WeightsError(f"{source}: {len(bad)} tensors contain NaN or infinite values ({_first(bad, 3)}); "
                           "the training run that wrote them had diverged")
    generator.load_state_dict(sd, strict=True)



def load_raw(path: Path, info: ModelInfo) -> tuple[Generator, ModelInfo]:
    sd, note = read_state_dict(path)
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
        # agree. Dropout (on or off, its rate, whole maps or elements, the levels it sits in) has no
        # weights, so the stated value wins.
        weightless = dict(dropout=config.dropout, dropout_p=config.dropout_p, channel_dropout=config.channel_dropout,
                          dropout_levels=config.dropout_levels)
        if replace(info.generator, **weightless) != config:
            said = f"the registry says for {info.id}" if from_registry else "its generator_config says"
            raise WeightsError(f"{path} holds {describe(config)}, but {said} {describe(info.generator)}")
        config = info.generator
    generator = build_generator(config)
    check_and_load(generator, sd, path)
    if not from_registry:  # otherwise the registry said; here, the habit of the layout's authors
        info = replace(info, dropout_sampling=default_dropout_sampling(config))
    info = replace(info, generator=config, path=path)
    if note:
        log.info("%s: %s", path, note)
        info.notes = f"{info.notes}; {note}" if info.notes else note
    return generator, info
