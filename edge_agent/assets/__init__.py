"""Files shipped inside the package: the TFLite models with their manifests and the example config.

Found with importlib.resources, so they are there for a wheel install as much as for a checkout.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

ROOT = Path(str(files(__name__)))
MODELS_DIR = ROOT / "models"
EXAMPLE_CONFIG = ROOT / "agent.example.yaml"


def shipped(relative: Path) -> Path | None:
    """`models/x.tflite` -> the shipped file of that name, or None when the package has none."""
    candidate = ROOT / relative
    return candidate if candidate.is_file() else None
