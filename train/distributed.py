"""Devices and processes: the same script on one process or under torchrun (DDP; NCCL on GPUs,
gloo on CPU)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from p2p_demo.nets import pick_device


def init_distributed(device: str) -> tuple[int, int, int]:
    """(rank, world size, local rank); starts the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), local


def resolve_device(device: str, local_rank: int = 0, world: int = 1) -> torch.device:
    dev = pick_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
    return dev
