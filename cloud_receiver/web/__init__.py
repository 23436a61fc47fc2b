"""The receiver's web console: pages for people, with browser assets shipped inside the package.

`setup_console(app)` (module `console`) registers it; `pages` has what page authors use (`render`,
`require_user`), `sessions` the login cookie and CSRF tokens, `login` the login and logout pages
(docs/console.md). Files are found with importlib.resources.

`static/vendor/` holds third-party browser libraries copied from their npm packages by
`scripts/vendor_assets.py` (never fetched from a CDN at run time); `vendor.json` there lists each file
with its package, version, sha256 and licence.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from cloud_receiver.web.console import setup_console

STATIC_DIR = Path(str(files(__name__))) / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
VENDOR_MANIFEST = VENDOR_DIR / "vendor.json"

__all__ = ["STATIC_DIR", "VENDOR_DIR", "VENDOR_MANIFEST", "setup_console"]
