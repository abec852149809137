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

from ..registry import UNKNOWN_LICENSE
from .download import ProgressCallback
from .folder import save_pretrained
from .push import push_to_hub
from .resolve import from_pretrained, load_generator

__all__ = ["UNKNOWN_LICENSE", "ProgressCallback", "from_pretrained", "load_generator", "push_to_hub", "save_pretrained"]
