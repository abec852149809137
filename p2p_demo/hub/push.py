"""Publishing a model folder to the Hub (checked by loading it first)."""

from __future__ import annotations

import os
from pathlib import Path

from ..registry import CARD_FILE, CONFIG_FILE, REPO_ID, WEIGHTS_FILE
from .resolve import from_pretrained


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
