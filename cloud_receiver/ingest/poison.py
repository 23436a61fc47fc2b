"""Poison messages: a PUBLISH the receiver cannot take must not block everything queued behind it.

The standard answers a bad PUBLISH (QoS 2 when we subscribed with 1, larger than our Maximum
Packet Size, a topic alias we never allowed, a topic name with bad UTF-8, U+0000 or a wildcard)
with DISCONNECT. But the broker keeps an unacknowledged message and delivers it again on the next
connection, so that answer alone loops forever and stores nothing behind it.

`PoisonGuard` gives each such message one strike: the first time, the connection ends with the
DISCONNECT reason the standard gives (a fault of that one connection, such as a bad alias, gets a
clean retry); when the broker delivers the same packet identifier again on a later connection and
it fails again, the message itself is the problem. It is then refused alone: logged, recorded in
`rejects` with its reason, and answered in its place in the acknowledgement order with an error
reason (PUBACK, or PUBREC for QoS 2), so the broker drops it and ingest goes on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from bk_contract import TopicError, parse_topic
from cloud_receiver.errors import StorageError
from cloud_receiver.ingest import codec
from cloud_receiver.ingest.handler import Ingestor
from cloud_receiver.storage.sqlite import utc_now

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Refused:
    """A poison message's place in a batch: acknowledged with `ack_reason` after `reason` is recorded."""

    topic: str  # printable
    packet_id: int
    qos: int
    reason: str
    ack_reason: int


class PoisonGuard:
    """Remembers which packet identifiers already cost a connection (at most `limit`, the oldest forgotten first)."""

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._struck: OrderedDict[int, str] = OrderedDict()

    def __bool__(self) -> bool:
        return bool(self._struck)

    def judge(self, bad: codec.BadPublish) -> Refused:
        """Refuse `bad` alone if its packet identifier failed before; else raise it (the first strike)."""
        if bad.packet_id and self._struck.pop(bad.packet_id, None) is not None:
            reason = f"poison message: {bad} (delivered again after DISCONNECT 0x{bad.code:02X})"
            log.warning("poison message refused", topic=bad.topic, packet_id=bad.packet_id, reason=str(bad),
                        ack_reason=codec.reason_name(codec.PUBACK if bad.qos == 1 else codec.PUBREC, bad.ack_reason))
            return Refused(bad.topic, bad.packet_id, bad.qos, reason, bad.ack_reason)
        if bad.packet_id:
            self._struck[bad.packet_id] = str(bad)
            while len(self._struck) > self.limit:
                self._struck.popitem(last=False)
        raise bad

    def cleared(self, packet_id: int) -> None:
        """A good message came with this identifier: whatever it carried before was settled."""
        self._struck.pop(packet_id, None)


def record_refused(ingestor: Ingestor, refused: Sequence[Refused]) -> bool:
    """Record poison messages in `rejects` (one transaction) and count them; False when storage failed."""
    storage = ingestor.storage
    try:
        with storage.batch():
            at = utc_now()
            for r in refused:
                storage.record_reject(_device_of(r.topic), r.topic, r.reason, at)
    except StorageError as err:
        log.error("storage failed", messages=len(refused), first_topic=refused[0].topic, error=str(err))
        return False
    ingestor.counts["rejected"] += len(refused)
    return True


def _device_of(topic: str) -> str | None:
    try:
        return parse_topic(topic).device_id
    except TopicError:
        return None
