"""Example inputs for the app: line drawings (PNG) a visitor can start from."""

from __future__ import annotations

from pathlib import Path

from ..files import IMAGE_SUFFIXES

EXAMPLES_DIR = Path(__file__).parent


def example_paths() -> list[Path]:
    """Every example image, sorted by name."""
    return sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
