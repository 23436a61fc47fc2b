"""The report form's challenge: a small sum signed by the receiver, which is also the form's token.

A form carries `token` = base64url(JSON [canteen, a, op, b, expires, nonce]) + "." + base64url(HMAC-SHA256);
the question ("23 减 7 等于多少?") is shown beside it and the server recomputes the answer from the
signed numbers, so nothing is stored until a report is accepted. The key is a site key in the
database (`site_keys`, made by the first receiver that needs it), so a form served by one receiver
is accepted by any other of the same database and survives restarts. A token is bound to its canteen
and expires; the report that uses it records its digest (`public_reports.form_sha256`, unique), so
each form is used once. This keeps out scripts that post blindly and other sites' forms (they cannot
sign a token); it does not stop a script written for this page, which is why reports are also
limited per address (public_report.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cloud_receiver.storage.db import Db, iso
from cloud_receiver.storage.schema import site_keys

KEY_NAME = "public_report_form"
KEY_BYTES = 32
TOKEN_MAX = 512  # longer than any token this module makes
OPS = {"+": "加", "-": "减"}


class ChallengeFailed(ValueError):
    """The form's token or answer does not hold; `reason` is expired, invalid or wrong_answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Challenge:
    question: str  # for people, in Chinese
    token: str  # the form's hidden field


def site_key(db: Db, name: str = KEY_NAME, now: datetime | None = None) -> bytes:
    """The shared secret `name`, made now (random) if no receiver has made it yet."""
    found = db.scalar(sa.select(site_keys.c.secret).where(site_keys.c.name == name))
    if found is not None:
        return bytes(found)
    insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
    with db.write() as conn:
        conn.execute(insert(site_keys).values(name=name, secret=secrets.token_bytes(KEY_BYTES),
                                              created_at=iso(now or datetime.now().astimezone()))
                     .on_conflict_do_nothing(index_elements=["name"]))
    return bytes(db.scalar(sa.select(site_keys.c.secret).where(site_keys.c.name == name)))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, payload: bytes) -> str:
    return _b64(hmac.new(key, payload, hashlib.sha256).digest())


def new_challenge(key: bytes, canteen_id: str, now: datetime, ttl_s: float) -> Challenge:
    """A fresh question and its signed token, valid `ttl_s` for this canteen's form."""
    op = "+" if secrets.randbelow(2) else "-"
    a, b = 10 + secrets.randbelow(40), 1 + secrets.randbelow(9)  # a minus b stays positive
    payload = json.dumps([canteen_id, a, op, b, int(now.timestamp() + ttl_s), _b64(secrets.token_bytes(12))],
                         separators=(",", ":"), ensure_ascii=False).encode()
    return Challenge(f"{a} {OPS[op]} {b} 等于多少?", f"{_b64(payload)}.{_sign(key, payload)}")


def check_challenge(key: bytes, token: str, canteen_id: str, answer: str, now: datetime) -> str:
    """The token's digest (what makes the form single-use) when it is ours, for this canteen, not expired,
    and `answer` is right; else ChallengeFailed."""
    try:
        encoded, signature = token.split(".") if len(token) <= TOKEN_MAX else ("", "")
        payload = _unb64(encoded)
        if not encoded or not hmac.compare_digest(_sign(key, payload), signature):
            raise ChallengeFailed("invalid")
        cid, a, op, b, expires, _nonce = json.loads(payload)
    except (ValueError, TypeError, binascii.Error) as err:
        raise ChallengeFailed("invalid") from err
    if cid != canteen_id or op not in OPS:
        raise ChallengeFailed("invalid")
    if now.timestamp() > expires:
        raise ChallengeFailed("expired")
    expected = a + b if op == "+" else a - b
    if unicodedata.normalize("NFKC", answer).strip() != str(expected):  # a phone may type full-width digits
        raise ChallengeFailed("wrong_answer")
    return hashlib.sha256(token.encode()).hexdigest()
