"""The `alerts` table's side of an Alert: event columns, the prepared upsert SQL, column defaults.

The mapping is pure; `column_defaults` reads a table's declared defaults. Shared by the SQLite and
PostgreSQL stores and the ingest benchmark.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from pydantic import TypeAdapter

from bk_contract import Alert, AlertBox
from cloud_receiver.storage.db import iso

_BOXES = TypeAdapter(list[AlertBox])  # pydantic's serializer: a fifth of the cost of model_dump + json.dumps
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # json.dumps(x, separators=…) builds an encoder on every call


def alert_values(alert: Alert) -> list[Any]:
    """The event columns of an alert (JSON columns in compact JSON), in `FIELD_COLUMNS` order."""
    snapshot, clip = alert.snapshot, alert.clip
    return [alert.id, alert.device_id, alert.camera_id, alert.type, alert.level, alert.state, alert.rev,
            iso(alert.started_at), iso(alert.ended_at), alert.score, _BOXES.dump_json(alert.boxes).decode(),
            _COMPACT.encode(alert.frame_size) if alert.frame_size else None,
            _COMPACT.encode(alert.zone) if alert.zone else None, alert.detail,
            snapshot.id if snapshot else None, snapshot.sha256 if snapshot else None,
            clip.id if clip else None, clip.sha256 if clip else None]


def alert_fields(alert: Alert) -> dict[str, Any]:
    """The event columns of an alert by name."""
    return dict(zip(FIELD_COLUMNS, alert_values(alert), strict=True))


EVENT_COLUMNS = ("camera_id", "type", "level", "state", "rev", "started_at", "ended_at", "score", "boxes_json",
                  "frame_size_json", "zone_json", "detail", "snapshot_id", "snapshot_sha256", "clip_id", "clip_sha256")
FIELD_COLUMNS = ("id", "device_id", *EVENT_COLUMNS)  # what `alert_values` holds
INSERT_COLUMNS = (*FIELD_COLUMNS, "canteen_id", "received_at", "updated_at")
INSERT_ALERT = (f"INSERT INTO alerts ({', '.join(INSERT_COLUMNS)}) VALUES ({', '.join(':' + c for c in INSERT_COLUMNS)})"
                 " ON CONFLICT (id) DO NOTHING")
# a higher rev of the same device's alert: event fields only, the workflow (status, deadline) stays
UPDATE_ALERT = (f"UPDATE alerts SET {', '.join(f'{c} = :{c}' for c in EVENT_COLUMNS)}, updated_at = :updated_at"
                 " WHERE id = :id AND device_id = :device_id AND rev < :rev RETURNING *")


def column_defaults(conn: sqlite3.Connection, table: str) -> dict[str, Any] | None:
    """Column -> default value (table order) when every default is a plain literal; else None."""
    out: dict[str, Any] = {}
    for _cid, name, _type, _notnull, default, _pk in conn.execute(f"PRAGMA table_info([{table}])"):
        if default is None or default.upper() == "NULL":
            out[name] = None
        elif len(default) >= 2 and default[0] == default[-1] == "'":
            out[name] = default[1:-1].replace("''", "'")
        else:
            try:
                out[name] = int(default)
            except ValueError:
                try:
                    out[name] = float(default)
                except ValueError:
                    return None  # an expression (e.g. CURRENT_TIMESTAMP): read inserted rows back instead
    return out or None
