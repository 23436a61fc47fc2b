"""The QR poster /p/{canteen_id}/qr.png decodes, with Debian's zbarimg, to exactly the public page's URL."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from PIL import Image
from support.api_kit import make_world

from cloud_receiver.config import PushConfig

pytestmark = pytest.mark.integration


def zbarimg(path) -> str:
    """What zbarimg reads from the picture (fails, never skips, when zbar-tools is missing)."""
    exe = shutil.which("zbarimg")
    if exe is None:
        pytest.fail("zbarimg is missing: apt-get install zbar-tools (scripts/setup.sh installs it)")
    done = subprocess.run([exe, "--raw", "-q", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("public_base_url", ["", "https://bk.example.gov.cn"])
async def test_the_poster_decodes_to_the_public_page_url(tmp_path, public_base_url):
    """With push.public_base_url the code names that address, else the one the request came to."""
    w = await make_world(tmp_path, config={"push": PushConfig(public_base_url=public_base_url)})
    base = public_base_url or f"http://127.0.0.1:{w.client.port}"
    try:
        r = await w.client.get("/p/C1/qr.png")
        assert r.status == 200 and r.content_type == "image/png"
        assert r.headers["Cache-Control"].startswith("public")
        png = tmp_path / "poster.png"
        png.write_bytes(await r.read())
    finally:
        await w.close()
    with Image.open(png) as img:
        assert img.size == (1240, 1754)  # A4 portrait at 150 dpi
    assert zbarimg(png) == f"{base}/p/C1"
