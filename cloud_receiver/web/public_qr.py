"""`/p/{canteen_id}/qr.png`: the poster for the canteen's wall — a large QR code of its public page and
the canteen's name in Chinese under it, A4 portrait at 150 dpi, for printing.

The URL in the code is the receiver's public address (`push.public_base_url`, which a deployment
behind a proxy must set) or else the address this request came to. The text is drawn with Noto Sans
CJK (Debian's fonts-noto-cjk, installed by scripts/setup.sh); without it the poster is refused with a
message naming the package, never drawn with boxes for characters.
"""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import quote

import segno
import structlog
from aiohttp import web
from PIL import Image, ImageDraw, ImageFont

from cloud_receiver.api.context import ctx
from cloud_receiver.appkeys import CONFIG
from cloud_receiver.web.public_render import not_found, render_public, settings_of

log = structlog.get_logger(__name__)

CJK_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
CJK_FONT_BOLD = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc")
SC = 2  # the face of the collection drawn with Simplified Chinese glyph shapes (JP, KR, SC, TC, HK)
PAGE = (1240, 1754)  # A4 at 150 dpi
QR_SIDE = 900  # pixels of the code with its quiet zone: ~15 cm printed, read from a few metres
MARGIN = 90
INK, ACCENT = (17, 24, 39), (21, 94, 170)


class FontMissing(RuntimeError):
    """The CJK font is not installed."""


def public_url(request: web.Request, canteen_id: str) -> str:
    base = request.app[CONFIG].push.public_base_url if CONFIG in request.app else ""
    base = (base or f"{request.scheme}://{request.host}").rstrip("/")
    return f"{base}/p/{quote(canteen_id, safe='')}"


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    path = CJK_FONT_BOLD if bold and CJK_FONT_BOLD.is_file() else CJK_FONT
    if not path.is_file():
        raise FontMissing(f"{CJK_FONT} is missing: apt-get install fonts-noto-cjk (scripts/setup.sh installs it)")
    return ImageFont.truetype(str(path), size, index=SC)


def _centred(draw: ImageDraw.ImageDraw, y: int, text: str, size: int, *, bold: bool = False,
             fill: tuple[int, int, int] = INK, min_size: int = 28) -> int:
    """Draw `text` centred at height `y`, shrunk until it fits the page's width; returns the y below it."""
    width = PAGE[0] - 2 * MARGIN
    while True:
        font = _font(size, bold)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        if right - left <= width or size <= min_size:
            break
        size -= 4
    draw.text(((PAGE[0] - (right - left)) / 2 - left, y - top), text, font=font, fill=fill)
    return y + (bottom - top)


def poster_png(url: str, canteen_name: str) -> bytes:
    """The poster as PNG bytes: heading, QR code of `url`, the canteen's name, what the page shows."""
    page = Image.new("RGB", PAGE, "white")
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, PAGE[0], 24), fill=ACCENT)
    y = _centred(draw, 110, "明厨亮灶 · 阳光食堂", 76, bold=True, fill=ACCENT)
    y = _centred(draw, y + 36, "扫码查看后厨实况、证照、量化分级与抽检结果", 40)
    qr = segno.make(url, error="m", micro=False)
    buf = io.BytesIO()
    qr.save(buf, kind="png", scale=max(1, QR_SIDE // qr.symbol_size(border=4)[0]), border=4)
    code = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    y += 50
    page.paste(code, ((PAGE[0] - code.width) // 2, y))
    y += code.width + 40
    y = _centred(draw, y, canteen_name or "食堂", 80, bold=True)
    y = _centred(draw, y + 36, "如发现食品安全问题, 可扫码在线投诉举报", 36, fill=(75, 85, 99))
    _centred(draw, PAGE[1] - 90, url, 30, fill=(107, 114, 128), min_size=16)
    out = io.BytesIO()
    page.save(out, "PNG", optimize=True, dpi=(150, 150))
    return out.getvalue()


async def qr_poster(request: web.Request) -> web.Response:
    canteen_id = request.match_info["canteen_id"]
    row = ctx(request).storage.get_canteen(canteen_id)
    if row is None:
        return not_found(request)
    try:
        png = poster_png(public_url(request, canteen_id), row["name"])
    except FontMissing as err:
        log.error("qr_poster_font_missing", problem=str(err))
        return render_public(request, "public_error.html", {
            "title": "海报暂不可用", "message": "服务器缺少中文字体 (fonts-noto-cjk), 无法生成二维码海报, 请联系管理员。"},
            status=503)
    return web.Response(body=png, content_type="image/png", headers={
        "Cache-Control": f"public, max-age={settings_of(request).poster_cache_s}",
        "Content-Disposition": f'inline; filename="qr-{quote(canteen_id, safe="")}.png"'})
