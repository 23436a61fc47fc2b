"""What the receiver asks of the broker when it connects, and how it judges the answers.

`Handshake` builds the CONNECT and the SUBSCRIBE, and checks CONNACK, SUBACK and DISCONNECT
against what the receiver needs, raising one of three things with a reason a person can act on:
- `ConnectionEnded`: this connection is over, try again with back-off (refused, disconnected);
- `BrokerMismatch`: the broker cannot serve the receiver as configured (no shared subscriptions
  while `mqtt.shared` is true, no wildcards, QoS 0 only): retrying will not help until a person
  changes the broker or the config, so the subscriber retries at its slowest;
- `codec.ProtocolError`: the broker broke MQTT v5 (a CONNACK code below 0x80 but not 0, as an MQTT
  3.1.1 broker refusing version 5 sends; Session Present 1 after a Clean Start).
It keeps what it learnt across connections: whether the broker ever accepted us (after which
Clean Start is never set again, and a missing session is worth a warning) and the session expiry
it grants (logged, with a warning when it is shorter than `mqtt.session_expiry_s`).
No sockets here: subscriber.py sends what this builds and feeds it what arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from cloud_receiver.config import MqttConfig
from cloud_receiver.ingest import codec
from cloud_receiver.ingest.mqtt_fields import PROTOCOL_ERROR, SHARED_NOT_SUPPORTED, WILDCARDS_NOT_SUPPORTED

log = structlog.get_logger(__name__)

KINDS = ("alert", "media/#", "status", "telemetry", "cmd/result")
MAX_PACKET_BYTES = 8 * 1024 * 1024  # announced as our Maximum Packet Size: the broker drops larger messages for us
SUBSCRIBE_ID = 1
NO_SHARED = ("set mqtt.shared: false to subscribe without a group (one receiver per broker), or use a broker with "
             "shared subscriptions (Mosquitto does)")
NO_WILDCARDS = "the receiver subscribes to bk/v1/+/...; allow wildcard subscriptions on the broker"


def subscriptions(group: str, shared: bool = True) -> list[str]:
    """The subscriptions of a receiver: shared ones in `group`, or plain ones (single receiver)."""
    prefix = f"$share/{group}/" if shared else ""
    return [f"{prefix}bk/v1/+/{kind}" for kind in KINDS]


class ConnectionEnded(Exception):
    """The connection is over (closed, refused, timed out, or the broker sent DISCONNECT); `str` says why."""


class BrokerMismatch(ConnectionEnded):
    """The broker cannot serve this receiver as configured; `str` says what a person must change."""


@dataclass(frozen=True, slots=True)
class Granted:
    """What an accepted CONNACK settles for this connection."""

    keepalive_s: int  # how often the receiver proves the link: the broker's Server Keep Alive, else ours
    session_expiry_s: int
    session_present: bool


class Handshake:
    def __init__(self, cfg: MqttConfig, password: str | None) -> None:
        self.cfg = cfg
        self._password = password
        self.filters = subscriptions(cfg.group, cfg.shared)
        self.accepted_before = False  # a CONNACK of an earlier connection accepted us
        self.clean_start = False  # what the last CONNECT asked
        self._granted_expiry: int | None = None  # last session expiry logged

    def connect_packet(self) -> bytes:
        """CONNECT; Clean Start only with `mqtt.clean_start` and until the broker first accepts us."""
        c = self.cfg
        self.clean_start = c.clean_start and not self.accepted_before
        return codec.connect_packet(c.client_id, c.keepalive_s, username=c.username,
                                    password=self._password if c.username else None, clean_start=self.clean_start,
                                    session_expiry_s=c.session_expiry_s, receive_maximum=c.receive_maximum,
                                    maximum_packet_size=MAX_PACKET_BYTES)

    def subscribe_packet(self) -> bytes:
        return codec.subscribe_packet(SUBSCRIBE_ID, [(f, 1) for f in self.filters])

    def on_connack(self, ack: codec.Connack) -> Granted:
        c = self.cfg
        if ack.reason_code >= 0x80:
            log.error("broker refused the receiver", reason=codec.reason_name(codec.CONNACK, ack.reason_code),
                      detail=ack.reason_string, host=c.host, port=c.port)
            raise ConnectionEnded(f"CONNACK {codec.reason_name(codec.CONNACK, ack.reason_code)}")
        if ack.reason_code:
            raise codec.ProtocolError(
                f"CONNACK reason 0x{ack.reason_code:02X} is no MQTT v5 success (only 0x00 is): an MQTT 3.1.1 broker "
                "refusing the connection answers like this, 0x01 meaning it does not speak MQTT v5", PROTOCOL_ERROR)
        if ack.session_present and self.clean_start:
            raise codec.ProtocolError("CONNACK with Session Present 1 in answer to a Clean Start", PROTOCOL_ERROR)
        if c.shared and not ack.shared_available:
            raise BrokerMismatch(f"the broker has no shared subscriptions (CONNACK Shared Subscription Available 0): "
                                 f"{NO_SHARED}")
        if not ack.wildcard_available:
            raise BrokerMismatch(f"the broker has no wildcard subscriptions (CONNACK Wildcard Subscription "
                                 f"Available 0): {NO_WILDCARDS}")
        if ack.maximum_qos == 0:
            raise BrokerMismatch("the broker allows QoS 0 only (CONNACK Maximum QoS 0): the receiver needs QoS 1, so "
                                 "that nothing is lost between delivery and storage; allow QoS 1 on the broker")
        # Server Keep Alive 0 frees us from pinging, but a link nobody checks can be dead for hours: ping anyway
        keepalive = ack.server_keep_alive or c.keepalive_s
        expiry = c.session_expiry_s if ack.session_expiry_s is None else ack.session_expiry_s
        log.info("receiver connected", host=c.host, port=c.port, session_present=ack.session_present,
                 session_expiry_s=expiry, keepalive_s=keepalive, server_keep_alive=ack.server_keep_alive)
        if expiry < c.session_expiry_s and expiry != self._granted_expiry:
            log.warning("the broker keeps the receiver's session for less than mqtt.session_expiry_s: what is queued "
                        "for a receiver stopped longer than the granted time is lost", granted_s=expiry,
                        configured_s=c.session_expiry_s, client_id=c.client_id)
        self._granted_expiry = expiry
        if self.accepted_before and not ack.session_present:
            log.warning("the broker kept no session for the receiver: what was queued for it while away is gone "
                        "(session expired, or the broker restarted without persistence)",
                        client_id=c.client_id, session_expiry_s=expiry)
        self.accepted_before = True
        return Granted(keepalive, expiry, ack.session_present)

    def on_suback(self, ack: codec.Suback) -> None:
        """Raises unless every subscription was granted with QoS 1."""
        if ack.packet_id != SUBSCRIBE_ID or len(ack.reason_codes) != len(self.filters):
            raise codec.ProtocolError(f"SUBACK for packet {ack.packet_id} with {len(ack.reason_codes)} reason codes; we "
                                      f"sent SUBSCRIBE {SUBSCRIBE_ID} with {len(self.filters)} filters", PROTOCOL_ERROR)
        if SHARED_NOT_SUPPORTED in ack.reason_codes:
            raise BrokerMismatch(f"the broker refused the shared subscriptions (SUBACK 0x9E): {NO_SHARED}")
        if WILDCARDS_NOT_SUPPORTED in ack.reason_codes:
            raise BrokerMismatch(f"the broker refused the wildcard subscriptions (SUBACK 0xA2): {NO_WILDCARDS}")
        # granted QoS 0 is a refusal too: QoS 0 messages are never acknowledged, so never delivered again
        refused = {f: codec.reason_name(codec.SUBACK, r) for f, r in zip(self.filters, ack.reason_codes, strict=True)
                   if r != 1}
        if refused:
            log.error("broker refused the receiver's subscriptions (QoS 1 needed); reconnecting", refused=refused,
                      detail=ack.reason_string)
            raise ConnectionEnded("subscriptions refused")

    def on_disconnect(self, end: codec.Disconnect) -> ConnectionEnded:
        """What a DISCONNECT from the broker means, as the exception to raise."""
        detail = f" ({end.reason_string})" if end.reason_string else ""
        said = f"the broker sent DISCONNECT {codec.reason_name(codec.DISCONNECT, end.reason_code)}{detail}"
        if end.reason_code == SHARED_NOT_SUPPORTED:
            return BrokerMismatch(f"{said}: {NO_SHARED}")
        if end.reason_code == WILDCARDS_NOT_SUPPORTED:
            return BrokerMismatch(f"{said}: {NO_WILDCARDS}")
        return ConnectionEnded(said)
