"""The public page /p/{canteen_id} (共治) through the real app on both engines: what it shows and never shows,
snapshots served only as blurred copies, and the 投诉/举报 form (challenge, honeypot, limits, the alert)."""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image, ImageDraw
from support.api_kit import CANTEENS, DEVICES, add_user, ago, jpeg, make_world, now

from cloud_receiver.admin import auth
from cloud_receiver.privacy.blur import Box, face_region
from cloud_receiver.privacy.faces import FaceFinder
from cloud_receiver.privacy.public_copy import POLICY, decode
from cloud_receiver.push.wiring import add_webhook
from cloud_receiver.storage.schema import push_outbox
from cloud_receiver.web.public_challenge import ChallengeFailed, check_challenge, new_challenge
from cloud_receiver.web.public_render import PUBLIC_SETTINGS, PublicSettings

pytestmark = pytest.mark.unit

FINDER = FaceFinder()
KEY = b"k" * 32


def kitchen_jpeg(faces: list[tuple[int, int, int]], size: tuple[int, int] = (1280, 720)) -> bytes:
    """A kitchen-like picture (tiled wall, steel counter) with the astronaut's head — NASA's public-domain
    portrait that ships in scikit-image — pasted at (x, y) with a face about `px` wide."""
    from skimage import data

    head = Image.fromarray(data.astronaut()).crop((130, 20, 330, 240))  # the face is ~90 px wide in it
    img = Image.new("RGB", size, (224, 228, 232))
    draw = ImageDraw.Draw(img)
    for x in range(0, size[0], 64):
        draw.line((x, 0, x, size[1] * 2 // 3), fill=(204, 208, 212), width=2)
    for y in range(0, size[1] * 2 // 3, 64):
        draw.line((0, y, size[0], y), fill=(204, 208, 212), width=2)
    draw.rectangle((0, size[1] * 2 // 3, size[0], size[1]), fill=(150, 156, 162))
    for x, y, px in faces:
        scale = px / 90
        img.paste(head.resize((round(200 * scale), round(220 * scale))), (x, y))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=95)
    return out.getvalue()


@pytest.fixture
async def world(tmp_path, db_engine):
    w = await make_world(tmp_path, db_engine, state={PUBLIC_SETTINGS: PublicSettings(reports_per_window=3)})
    yield w
    await w.close()


def _publish(world, canteen: str, *shas: str) -> None:
    """Put these snapshots on the canteen's public page (the rest of the page as seeded)."""
    row = world.storage.get_canteen(canteen)
    page = json.loads(row["public_json"] or "{}")
    page["snapshots"] = [{"sha256": s, "taken_at": "2024-05-02T03:00:00Z", "caption": "后厨"} for s in shas]
    world.storage.set_public_json(canteen, json.dumps(page, ensure_ascii=False))


async def _form(world, canteen: str = "C1") -> dict[str, str]:
    """The report form's token and the right answer, read from the page as a person would."""
    html = await (await world.client.get(f"/p/{canteen}")).text()
    token = re.search(r'name="token" value="([^"]+)"', html).group(1)
    a, op, b = re.search(r'id="challenge-question">(\d+) (加|减) (\d+) 等于多少', html).groups()
    return {"token": token, "answer": str(int(a) + int(b) if op == "加" else int(a) - int(b))}


async def _report(world, canteen: str = "C1", *, photo: bytes | None = None, **fields: str):
    form = {"text": "后厨地面有积水, 操作间门未关。", "website": "", **(await _form(world, canteen)), **fields}
    data: dict = dict(form)
    if photo is not None:
        data["photo"] = io.BytesIO(photo)
    return await world.client.post(f"/p/{canteen}/report", data=data)


async def _alert_ids(world, who: str, type_: str = "public_report") -> list[str]:
    r = await world.get(f"/alerts?type={type_}", who)
    assert r.status == 200, await r.text()
    return [a["id"] for a in (await r.json())["items"]]


# -- what the page shows -------------------------------------------------------------------------------
async def test_page_shows_rating_licences_sampling_and_the_rectification_record(world):
    """The rating, licences, sampling results and 30/90-day counts with the completion rate are on the page."""
    for days, status in ((2, "复核通过"), (5, "待整改"), (10, "复核通过"), (40, "复核通过"), (120, "复核通过")):
        row = world.add_alert("C1", started_at=ago(days=days))
        world.storage.sql.rows("UPDATE alerts SET status = :s WHERE id = :id", s=status, id=row["id"])
    world.add_alert("C1", started_at=ago(days=1), type="no_mask")  # open
    world.add_alert("C2", started_at=ago(days=1))  # another canteen's
    r = await world.client.get("/p/C1")
    html = await r.text()
    assert r.status == 200 and "第一中学食堂" in html
    assert 'class="pub-rating rating-a"' in html and "A 级 · 优秀" in html
    assert "食品经营许可证" in html and "JY16405020000001" in html
    assert "餐具" in html and "2024-04-20" in html and "合格" in html
    # last 30 days: 4 alerts, 2 approved (50%); last 90 days: 5 alerts, 3 approved (60%); 120 days ago: neither
    assert "预警 4 条 · 复核通过 2 条" in html and ">50%<" in html
    assert "预警 5 条 · 复核通过 3 条" in html and ">60%<" in html


async def test_page_has_nothing_private(world):
    """No jurisdiction code, device id, alert id, user or token name, or unlisted snapshot in the HTML."""
    add_user(world, "reg1", "regulator", "640502", display_name="李监管")
    alert = world.add_alert("C1", started_at=ago(days=1), snapshot=jpeg("violation"))
    html = await (await world.client.get("/p/C1")).text()
    for private in (CANTEENS["C1"][1], *DEVICES.values(), alert["id"], alert["snapshot_sha256"],
                    world.private_sha, "reg1", "李监管", "shapotou-regulator", "c1-manager", "jurisdiction"):
        assert private not in html, private


async def test_page_is_cacheable_sets_no_cookie_and_runs_under_the_csp(world):
    """The page is the same for everyone: cacheable, no cookie, the console's CSP, phone viewport."""
    r = await world.client.get("/p/C1")
    assert r.headers["Cache-Control"] == "public, max-age=60"
    assert "Set-Cookie" not in r.headers
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    html = await r.text()
    assert 'name="viewport"' in html and "<script>" not in html and "style=" not in html


async def test_unknown_canteen_is_a_404_page(world):
    """An unknown canteen, its poster and its snapshots are 404 pages in Chinese."""
    for path in ("/p/NOPE", "/p/NOPE/qr.png", f"/p/NOPE/snapshots/{world.public_sha}.jpg"):
        r = await world.client.get(path)
        assert r.status == 404 and r.content_type == "text/html" and "没有" in await r.text(), path


# -- snapshots: blurred copies only ---------------------------------------------------------------------
async def test_a_public_snapshot_is_served_with_its_faces_blurred(world):
    """The detector finds the face in the original and none in the served copy; the rest is unchanged."""
    original = kitchen_jpeg([(300, 120, 90), (820, 160, 60)])
    sha = world.add_media(original, "face1", DEVICES["C1"])
    _publish(world, "C1", sha)
    found = FINDER.find(decode(original))
    assert len(found) >= 2, found
    html = await (await world.client.get("/p/C1")).text()
    assert f'src="/p/C1/snapshots/{sha}.jpg"' in html
    r = await world.client.get(f"/p/C1/snapshots/{sha}.jpg")
    assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"
    assert r.headers["Cache-Control"].startswith("public")
    served = await r.read()
    assert served != original and FINDER.find(decode(served)) == []
    before, after = (np.asarray(decode(x), dtype=np.int16) for x in (original, served))
    assert before.shape == after.shape
    outside = np.ones(before.shape[:2], dtype=bool)
    for face in FINDER.find(decode(original), sensitive=True):
        x1, y1, x2, y2 = face_region(face).padded(0.1).clipped(before.shape[1], before.shape[0])
        outside[y1:y2, x1:x2] = False
        assert np.abs(before[y1:y2, x1:x2] - after[y1:y2, x1:x2]).mean() > 10  # really obscured
    diff = np.abs(before - after)[outside]
    assert diff.mean() < 2.0 and np.percentile(diff, 99.9) < 40  # JPEG's own error only
    assert (world.media_dir / "public" / POLICY / sha[:2] / f"{sha}.jpg").read_bytes() == served  # made once


async def test_the_heads_of_the_alerts_person_boxes_are_blurred_too(world):
    """The top third of each person box of the snapshot's alert is obscured even where no face is found."""
    original = kitchen_jpeg([])  # no face: a head seen from above looks like this to the detector
    alert = world.add_alert("C1", started_at=ago(hours=1), snapshot=original)
    sha = alert["snapshot_sha256"]
    boxes = [{"label": "person", "score": 0.9, "box": [100, 50, 200, 350]},  # in a 640x360 frame: x2 in the image
             {"label": "cell phone", "score": 0.9, "box": [400, 200, 420, 220]}]
    world.storage.sql.rows("UPDATE alerts SET boxes_json = :b, frame_size_json = '[640,360]' WHERE id = :id",
                           b=json.dumps(boxes), id=alert["id"])
    _publish(world, "C1", sha)
    r = await world.client.get(f"/p/C1/snapshots/{sha}.jpg")
    assert r.status == 200
    before, after = (np.asarray(decode(x), dtype=np.int16) for x in (original, await r.read()))
    diff = np.abs(before - after).sum(axis=2)
    head = Box(200, 100, 400, 100 + 600 / 3)  # the person's top third, in image pixels
    hx1, hy1, hx2, hy2 = head.clipped(1280, 720)
    assert diff[hy1:hy2, hx1:hx2].mean() > 5  # the tiles' lines are smeared away
    assert diff[400:700, 0:1280].mean() < 6 and diff[0:720, 700:1280].mean() < 6  # body, counter, elsewhere: kept


async def test_only_snapshots_the_canteen_lists_are_served_and_never_the_original(world):
    """Unlisted, private, another canteen's path, not a picture: 404; no anonymous original via the API."""
    assert (await world.client.get(f"/p/C1/snapshots/{world.private_sha}.jpg")).status == 404  # "public": false
    original = kitchen_jpeg([(300, 120, 90)])
    listed = world.add_media(original, "face2", DEVICES["C1"])
    unlisted = world.add_media(kitchen_jpeg([(500, 100, 90)]), "face3", DEVICES["C1"])
    _publish(world, "C1", listed)
    assert (await world.client.get(f"/p/C1/snapshots/{unlisted}.jpg")).status == 404
    assert (await world.client.get(f"/p/C2/snapshots/{listed}.jpg")).status == 404
    assert (await world.client.get("/p/C1/snapshots/not-a-hash.jpg")).status == 404
    # the seeded public snapshot is not a decodable picture: refused rather than passed on
    _publish(world, "C1", world.public_sha)
    r = await world.client.get(f"/p/C1/snapshots/{world.public_sha}.jpg")
    assert r.status == 404 and r.content_type == "text/html"
    _publish(world, "C1", listed)
    assert (await world.get(f"/media/{listed}")).status == 404  # anonymous: never the original
    r = await world.get(f"/media/{listed}", "c1")  # the canteen keeps its original
    assert r.status == 200 and await r.read() == original
    assert (await world.get(f"/media/{listed}", "reg")).status == 200
    assert (await world.get(f"/media/{listed}", "c3")).status == 404


# -- the report form ----------------------------------------------------------------------------------
def test_challenge_tokens_are_bound_signed_and_expire():
    """A token works once solved for its canteen before it expires; tampering, another canteen, late: refused."""
    t0 = now()
    c = new_challenge(KEY, "C1", t0, 600)
    a, op, b = re.match(r"(\d+) (加|减) (\d+)", c.question).groups()
    answer = str(int(a) + int(b) if op == "加" else int(a) - int(b))
    assert len(check_challenge(KEY, c.token, "C1", answer, t0)) == 64
    full_width = answer.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    assert check_challenge(KEY, c.token, "C1", full_width, t0)  # as a phone's Chinese keyboard types it
    for token, canteen, ans, when, reason in (
            (c.token, "C1", str(int(answer) + 1), t0, "wrong_answer"), (c.token, "C2", answer, t0, "invalid"),
            (c.token, "C1", answer, t0 + timedelta(seconds=601), "expired"),
            (c.token[:-2] + ("AA" if not c.token.endswith("AA") else "BB"), "C1", answer, t0, "invalid"),
            ("x" * 2000, "C1", answer, t0, "invalid"), ("", "C1", answer, t0, "invalid")):
        with pytest.raises(ChallengeFailed) as err:
            check_challenge(KEY, token, canteen, ans, when)
        assert err.value.reason == reason
    with pytest.raises(ChallengeFailed):
        check_challenge(b"another-key" * 3, c.token, "C1", answer, t0)


async def test_a_report_reaches_the_regulators_of_its_jurisdiction_as_an_alert(world):
    """A good report (text and photo) is an alert public_report: listed for the jurisdiction, pushed, not elsewhere."""
    add_webhook(world.storage.sql, "hook-640502", "jurisdiction", "640502", "wecom", "http://127.0.0.1:9/hook")
    other_region = auth.create_token(world.storage.sql, "regulator", "640521", "zhongning-regulator")
    photo = kitchen_jpeg([])
    r = await _report(world, photo=photo)
    html = await r.text()
    assert r.status == 200 and "已收到您的投诉举报" in html and r.headers["Cache-Control"] == "no-store"
    ids = await _alert_ids(world, "reg")
    assert len(ids) == 1 and ids[0] not in html
    alert = await (await world.get(f"/alerts/{ids[0]}", "reg")).json()
    assert alert["type"] == "public_report" and alert["type_name"] == "公众举报" and alert["canteen_id"] == "C1"
    assert alert["detail"] == "后厨地面有积水, 操作间门未关。" and alert["status"] == "待整改"
    sha = alert["snapshot_sha256"]
    r = await world.get(f"/media/{sha}", "reg")
    assert r.status == 200 and await r.read() == photo
    assert (await world.get(f"/media/{sha}")).status == 404 and (await world.get(f"/media/{sha}", "c3")).status == 404
    assert ids == await _alert_ids(world, "city") == await _alert_ids(world, "c1")
    world.tokens["zhongning"] = other_region
    assert await _alert_ids(world, "zhongning") == [] and await _alert_ids(world, "c3") == []
    owed = world.storage.sql.all(sa.select(push_outbox.c.robot_id).where(push_outbox.c.alert_id == ids[0]))
    assert owed == [{"robot_id": "hook-640502"}]
    # complaints are not counted against the canteen's rectification record
    assert "预警 0 条" in await (await world.client.get("/p/C1")).text()


@pytest.mark.parametrize(("fields", "status", "message"), [
    ({"answer": "-1"}, 400, "验证题答案不正确"),
    ({"token": "forged.token"}, 400, "表单已失效或来源不明"),
    ({"website": "http://spam.example"}, 400, "提交未被受理"),
    ({"text": "   "}, 400, "请填写投诉或举报的内容"),
    ({"text": "脏" * 501}, 400, "投诉内容不能超过 500 字"),
])
async def test_a_refused_report_says_why_in_chinese_and_raises_nothing(world, fields, status, message):
    """Wrong answer, forged token, honeypot, empty or long text: 400 with the reason; no alert is raised."""
    r = await _report(world, **fields)
    html = await r.text()
    assert r.status == status and message in html and 'id="report-error"' in html, html[-2000:]
    assert r.headers["Cache-Control"] == "no-store"
    assert await _alert_ids(world, "admin") == []


async def test_photos_are_checked_for_type_and_size(tmp_path, db_engine):
    """A photo that is not a JPEG is 400; one over the limit is 413; neither raises an alert."""
    w = await make_world(tmp_path, db_engine, state={PUBLIC_SETTINGS: PublicSettings(photo_max_bytes=64 * 1024)})
    try:
        png = io.BytesIO()
        Image.new("RGB", (32, 32)).save(png, "PNG")
        r = await _report(w, photo=png.getvalue())
        assert r.status == 400 and "照片只能是 JPEG 格式" in await r.text()
        r = await _report(w, photo=jpeg("x") + bytes(70 * 1024))
        assert r.status == 413 and "照片不能超过" in await r.text()
        assert await _alert_ids(w, "admin") == []
    finally:
        await w.close()


async def test_a_form_is_used_once_and_belongs_to_its_canteen(world):
    """The same token twice: the second is refused; a C2 form posted to C1 is refused."""
    form = await _form(world)
    first = await world.client.post("/p/C1/report", data={"text": "第一次", "website": "", **form})
    again = await world.client.post("/p/C1/report", data={"text": "第二次", "website": "", **form})
    assert first.status == 200 and again.status == 400 and "此表单已提交过" in await again.text()
    r = await world.client.post("/p/C1/report", data={"text": "别处的表单", "website": "", **(await _form(world, "C2"))})
    assert r.status == 400
    assert len(await _alert_ids(world, "admin")) == 1


async def test_reports_are_limited_per_address(world):
    """After 3 accepted reports in the window the address gets 429 with Retry-After, the text kept."""
    for _ in range(3):
        assert (await _report(world)).status == 200
    r = await _report(world, text="第四次举报")
    html = await r.text()
    assert r.status == 429 and "提交过于频繁" in html and "第四次举报" in html
    assert 3500 <= int(r.headers["Retry-After"]) <= 3601
    assert len(await _alert_ids(world, "admin")) == 3


async def test_a_form_posted_from_another_site_is_refused(world):
    """A browser's Origin of another site: 403, whatever the token."""
    form = await _form(world)
    r = await world.client.post("/p/C1/report", data={"text": "跨站", "website": "", **form},
                                headers={"Origin": "https://evil.example"})
    assert r.status == 403 and await _alert_ids(world, "admin") == []
