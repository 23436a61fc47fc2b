"""The receiver's web console: browser assets shipped inside the package, found with importlib.resources.

`static/vendor/` holds third-party browser libraries copied from their npm packages by
`scripts/vendor_assets.py` (never fetched from a CDN at run time); `vendor.json` there lists each file
with its package, version, sha256 and licence.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

STATIC_DIR = Path(str(files(__name__))) / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
VENDOR_MANIFEST = VENDOR_DIR / "vendor.json"
