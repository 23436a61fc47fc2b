"""How a stored alert is announced to every receiver on PostgreSQL: the NOTIFY channel and its payloads.

The ingest writer (`storage/postgres.py`) and the alerts the receiver raises itself
(`workflow/raise_alert.py`) NOTIFY `id:rev` tokens in the storing transaction; each receiver's listener
(`ingest/pg_notify.py`) reads them.
"""

from __future__ import annotations

ALERT_CHANNEL = "bk_alerts"  # NOTIFY channel of stored alerts (cloud_receiver/ingest/pg_notify.py listens)
NOTIFY_PAYLOAD_MAX = 7900  # bytes of alert tokens per NOTIFY (PostgreSQL's limit is 8000)


def alert_channel(schema: str) -> str:
    """The NOTIFY channel of the alerts stored in `schema`: channels are per database, not per schema."""
    name = ALERT_CHANNEL if schema == "public" else f"{ALERT_CHANNEL}.{schema}"
    return name.encode()[:63].decode(errors="ignore")  # an identifier: at most 63 bytes


def notify_token(alert_id: str, rev: int) -> str:
    """How a NOTIFY names a stored alert: `id:rev` (ids are ASCII without spaces or colons: bk_contract's id
    pattern). With the rev, a listener skips what its own hub announced already without reading the row."""
    return f"{alert_id}:{rev}"


def parse_token(token: str) -> tuple[str, int | None]:
    """(id, rev) of a `notify_token`; rev None for a bare id (what receivers before the rev sent)."""
    alert_id, _, rev = token.partition(":")
    return alert_id, int(rev) if rev.isdigit() else None


def notify_payloads(tokens: list[str], limit: int = NOTIFY_PAYLOAD_MAX) -> list[str]:
    """Alert tokens (`notify_token`: ASCII, no spaces) as space-separated NOTIFY payloads of at most `limit` bytes,
    each token once."""
    out: list[str] = []
    part: list[str] = []
    size = 0
    for token in dict.fromkeys(tokens):
        if part and size + 1 + len(token) > limit:
            out.append(" ".join(part))
            part, size = [], 0
        size += len(token) + (1 if part else 0)
        part.append(token)
    if part:
        out.append(" ".join(part))
    return out
