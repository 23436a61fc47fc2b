"""Cutting the broker's byte stream into packets across reads (pure: bytes in, packets out).

`PacketReader.feed(data)` returns the whole packets that `data` completes, as (first byte, body),
and keeps an incomplete packet for the next call. A packet larger than our Maximum Packet Size is
never buffered whole: once the first `HEAD_BYTES` of its body are in (enough for a PUBLISH's topic
and packet identifier) it comes out as (first byte | `TOO_LARGE`, `TooLargeHead`), and the rest of
it is dropped as it arrives. So a broker that sends one anyway costs no memory, and the message can
still be named and refused (subscriber.py). The flag keeps such an item off the PUBLISH path
(`first >> 4` is no packet type), so the hot loop needs no extra test.
"""

from __future__ import annotations

from cloud_receiver.ingest.codec import scan_packets

TOO_LARGE = 0x100  # added to the first byte of a packet above our maximum size
HEAD_BYTES = 2 + 0xFFFF + 2  # the longest topic name and a packet identifier


class TooLargeHead(bytes):
    """The first bytes of the body of a packet above our maximum size; `size` is the whole packet's."""

    size: int


class PacketReader:
    """One connection's reader. Raises `ProtocolError` for a malformed remaining length."""

    def __init__(self, max_packet_bytes: int) -> None:
        self.max_packet_bytes = max_packet_bytes
        self._pending = b""  # the start of a packet not yet whole
        self._skip = 0  # bytes of a packet above our maximum still to drop

    @property
    def mid_packet(self) -> bool:
        """Whether part of a packet has arrived and the rest has not."""
        return bool(self._pending or self._skip)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return []
            data, self._skip = data[self._skip:], 0
        if self._pending:
            data = self._pending + data
        out: list[tuple[int, bytes]] = []
        pos = 0
        while True:
            packets, pos, big = scan_packets(data, pos, self.max_packet_bytes)
            out += packets
            if big is None:
                break
            first, body_at, size = big
            head_len = min(size - (body_at - pos), HEAD_BYTES)
            if len(data) - body_at < head_len:
                break  # wait for the head; `pos` stays at the packet's start
            head = TooLargeHead(data[body_at:body_at + head_len])
            head.size = size
            out.append((first | TOO_LARGE, head))
            end = pos + size
            if end > len(data):
                self._skip, pos = end - len(data), len(data)
                break
            pos = end
        self._pending = data[pos:]
        return out
