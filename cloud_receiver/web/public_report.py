"""`POST /p/{canteen_id}/report`: the public's 投诉/举报, which reaches the jurisdiction's regulators as an alert.

The form (on the canteen's public page) sends `text` (≤ 500 characters), an optional `photo` (a JPEG
of ≤ 5 MB, its bytes checked), `answer` to the signed challenge whose `token` is also the form's
anti-forgery token (public_challenge.py), and `website`, a field people never see: a form that fills
it is a robot's and is refused. A browser's `Origin`, when sent, must be this site.

Each client address (`request.remote`; an IPv6 address counts as its /64) may send
`reports_per_window` reports per `report_window_s` (3 an hour): the accepted reports are rows of
`public_reports`, so the limit holds across receivers and restarts, and rows are deleted once no
limit or form needs them any more (hours), so addresses are not kept. A refused form answers
400/403/413/429 with the page again, the reason in Chinese and the text kept.

An accepted report becomes an alert of type `public_report` (公众举报) of the canteen, from the pseudo
device `public-report`, its text as `detail` and its photo as the snapshot (stored like media, by
content hash); with its push rows, in the transaction that records the report
(workflow/raise_alert.py), and announced on the alert hub: regulators list it, are pushed it and
take it through 整改 → 复核 like any camera alert.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
import structlog
from aiohttp import BodyPartReader, web
from sqlalchemy.dialects import postgresql, sqlite
from ulid import ULID

from bk_contract.media_types import JPEG, sniff_media_type
from cloud_receiver.api.context import ctx
from cloud_receiver.appkeys import CONFIG
from cloud_receiver.errors import StorageError
from cloud_receiver.storage.db import Db, iso, parse_iso
from cloud_receiver.storage.media_store import write_media_file
from cloud_receiver.storage.schema import alerts, media, public_reports
from cloud_receiver.web.public_challenge import ChallengeFailed, check_challenge
from cloud_receiver.web.public_render import (
    CHALLENGE_KEY,
    PublicSettings,
    canteen_page,
    not_found,
    render_public,
    settings_of,
)
from cloud_receiver.workflow.queries import PUBLIC_REPORT_DEVICE
from cloud_receiver.workflow.raise_alert import insert_alerts

log = structlog.get_logger(__name__)

FIELDS = ("text", "answer", "token", "website")
FIELD_MAX_BYTES = 8 * 1024  # a text field: 500 Chinese characters are 1,500 bytes
PARTS_MAX = 8
REPORT_CAMERA = "公众举报"  # `alerts.camera_id` of a report: where people read the camera's name
CHALLENGE_MESSAGES = {"invalid": "表单已失效或来源不明, 请重新作答验证题后提交。",
                      "expired": "表单已过期, 请重新作答验证题后提交。",
                      "wrong_answer": "验证题答案不正确, 请重新计算后提交。"}


@dataclass
class Refused(Exception):
    status: int
    message: str  # for people, in Chinese
    retry_after_s: int | None = None


def client_key(remote: str | None) -> str:
    """The address a limit counts: IPv4 as is, IPv6 as its /64 (one subscriber has a whole /64)."""
    try:
        ip = ipaddress.ip_address(remote or "")
    except ValueError:
        return (remote or "unknown")[:64]
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


def retry_after(db: Db, client: str, now: datetime, s: PublicSettings) -> int | None:
    """Seconds until this client may report again; None when it may now."""
    r = public_reports.c
    times = db.all(sa.select(r.at).where(r.client == client, r.at > iso(now - timedelta(seconds=s.report_window_s)))
                   .order_by(r.at.desc()).limit(s.reports_per_window))
    if len(times) < s.reports_per_window:
        return None
    free = parse_iso(times[-1]["at"]) + timedelta(seconds=s.report_window_s)
    return max(1, int((free - now).total_seconds()) + 1)


def _same_site(request: web.Request) -> bool:
    """A browser says where a form comes from (`Origin`, `Sec-Fetch-Site`): it must be this site."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if not origin:
        return True  # not a browser, or an old one: the signed token still has to be right
    public = request.app[CONFIG].push.public_base_url if CONFIG in request.app else ""
    return urlsplit(origin).netloc in {request.host, urlsplit(public).netloc} - {""}


async def _read_part(part: Any, limit: int, too_big: str) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise Refused(413, too_big)
    return bytes(data)


async def read_form(request: web.Request, s: PublicSettings) -> tuple[dict[str, str], bytes | None]:
    """The form's text fields and photo, read with limits (a part too large is refused while it arrives)."""
    fields: dict[str, str] = {}
    if request.content_type != "multipart/form-data":
        form = await request.post()
        return {k: str(form.get(k, ""))[:FIELD_MAX_BYTES] for k in FIELDS}, None
    photo = None
    reader = await request.multipart()
    for _ in range(PARTS_MAX):
        part = await reader.next()
        if part is None:
            return fields, photo
        if not isinstance(part, BodyPartReader):  # a multipart inside the multipart: no form of ours
            raise Refused(400, "表单格式不正确。")
        if part.name == "photo":
            photo = await _read_part(part, s.photo_max_bytes, f"照片不能超过 {s.photo_max_bytes // (1024 * 1024)} MB。")
        elif part.name in FIELDS:
            raw = await _read_part(part, FIELD_MAX_BYTES, f"投诉内容不能超过 {s.text_max} 字。")
            fields[part.name] = raw.decode("utf-8", errors="replace")
        else:
            await part.release()
    raise Refused(400, "表单格式不正确。")


def store_report(request: web.Request, canteen_id: str, client: str, form_sha: str, text: str, photo: bytes | None,
                 now: datetime, keep_s: float) -> list[dict[str, Any]]:
    """Record the report and raise its alert (with its pushes) in one transaction; the new alert rows."""
    c = ctx(request)
    db = c.storage.sql
    sha = hashlib.sha256(photo).hexdigest() if photo else None
    rel = write_media_file(c.media_dir, photo, sha) if photo and sha else None
    alert_id = f"report-{ULID()}"
    row = {"id": alert_id, "device_id": PUBLIC_REPORT_DEVICE, "canteen_id": canteen_id, "camera_id": REPORT_CAMERA,
           "type": "public_report", "level": "warning", "state": "start", "rev": 1, "started_at": iso(now),
           "boxes_json": "[]", "detail": text, "snapshot_id": sha, "snapshot_sha256": sha, "received_at": iso(now),
           "updated_at": iso(now)}
    insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
    try:
        with db.write() as conn:
            conn.execute(public_reports.delete().where(public_reports.c.at <= iso(now - timedelta(seconds=keep_s))))
            conn.execute(public_reports.insert().values(client=client, canteen_id=canteen_id, form_sha256=form_sha,
                                                        at=iso(now)))
            if photo and sha:
                conn.execute(insert(media).values(id=sha, device_id=PUBLIC_REPORT_DEVICE, sha256=sha, bytes=len(photo),
                                                  content_type=JPEG, path=rel, complete=1, received_at=iso(now))
                             .on_conflict_do_nothing(index_elements=["id", "device_id"]))
            new = insert_alerts(db, conn, [row], c.storage.push_owner, now, getattr(c.storage, "channel", None))
    except StorageError as err:
        if isinstance(err.__cause__, sa.exc.IntegrityError):  # the form's token was used already
            raise Refused(400, "此表单已提交过。如需再次投诉, 请重新作答验证题。") from err
        raise
    return db.all(sa.select(alerts).where(alerts.c.id.in_(new)))


def _checked(fields: dict[str, str], photo: bytes | None, s: PublicSettings) -> tuple[str, bytes | None]:
    text = fields.get("text", "").replace("\r\n", "\n").strip()
    if not text:
        raise Refused(400, "请填写投诉或举报的内容。")
    if len(text) > s.text_max:
        raise Refused(400, f"投诉内容不能超过 {s.text_max} 字 (现在 {len(text)} 字)。")
    if photo and sniff_media_type(photo) != JPEG:
        raise Refused(400, "照片只能是 JPEG 格式 (.jpg)。")
    return text, photo or None


async def submit_report(request: web.Request) -> web.Response:
    c, s = ctx(request), settings_of(request)
    canteen_id = request.match_info["canteen_id"]
    row = c.storage.get_canteen(canteen_id)
    if row is None:
        return not_found(request)
    now, fields = c.now(), {}
    try:
        if not _same_site(request):
            raise Refused(403, "请在食堂公示页面上填写并提交。")
        fields, photo = await read_form(request, s)
        if fields.get("website"):
            log.info("public_report_refused", canteen_id=canteen_id, reason="honeypot")
            raise Refused(400, "提交未被受理。")
        client = client_key(request.remote)
        wait = retry_after(c.storage.sql, client, now, s)
        if wait is not None:
            log.info("public_report_refused", canteen_id=canteen_id, reason="rate_limited", retry_after_s=wait)
            raise Refused(429, f"提交过于频繁: 每个网络每 {round(s.report_window_s / 60)} 分钟最多提交 "
                          f"{s.reports_per_window} 次, 请约 {max(1, wait // 60)} 分钟后再试。", wait)
        try:
            form_sha = check_challenge(request.app[CHALLENGE_KEY], fields.get("token", ""), canteen_id,
                                       fields.get("answer", ""), now)
        except ChallengeFailed as err:
            log.info("public_report_refused", canteen_id=canteen_id, reason=err.reason)
            raise Refused(400, CHALLENGE_MESSAGES[err.reason]) from err
        text, photo = _checked(fields, photo, s)
        rows = store_report(request, canteen_id, client, form_sha, text, photo, now,
                            max(s.report_window_s, s.challenge_ttl_s))
    except Refused as err:
        response = canteen_page(request, row, status=err.status, error=err.message,
                                text=fields.get("text", "")[:s.text_max])
        if err.retry_after_s:
            response.headers["Retry-After"] = str(err.retry_after_s)
        return response
    for alert in rows:
        log.info("public_report_accepted", canteen_id=canteen_id, alert_id=alert["id"], photo=bool(photo))
        if c.hub is not None:
            c.hub.publish(alert, once=True)  # wakes the push router; on PostgreSQL the listener hears it too
    return render_public(request, "public_report_done.html", {"title": "已收到您的投诉举报", "canteen_name": row["name"],
                                                              "canteen_id": canteen_id})
