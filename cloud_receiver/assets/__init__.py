"""Files shipped inside the receiver package (the example config), found with importlib.resources."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

ROOT = Path(str(files(__name__)))
EXAMPLE_CONFIG = ROOT / "receiver.example.yaml"
