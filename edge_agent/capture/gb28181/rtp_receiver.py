"""Media receiver of one INVITE session: RTP over UDP or TCP -> reorder -> PS demux -> access units.

Access units go to a thread-safe queue that the decode thread of `GbChannelSource` reads.
"""

from __future__ import annotations

import asyncio
import queue
import socket
from dataclasses import dataclass, field

import structlog

from edge_agent.capture.gb28181.framing import TcpRtpDeframer
from edge_agent.capture.gb28181.ps import AccessUnit, PsDemuxer
from edge_agent.capture.gb28181.rtp import ReorderBuffer, RtpPacket, parse_rtp
from edge_agent.errors import ParseError, RetryLater

log = structlog.get_logger(__name__)


@dataclass
class MediaStats:
    packets: int = 0
    bad_rtp: int = 0
    foreign_ssrc: int = 0
    units: int = 0
    dropped_units: int = 0
    ssrc_rebinds: int = 0
    extra: dict = field(default_factory=dict)


class _UdpMedia(asyncio.DatagramProtocol):
    def __init__(self, rx: MediaReceiver) -> None:
        self.rx = rx

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.rx.on_rtp(data)


class MediaReceiver:
    """Receives one stream. `expected_ssrc` may be re-bound (SDP answer `y=` or the first packets).

    `closed` is set by `close()` and also when the TCP media connection ends (EOF, reset, framing
    lost): the session cannot go on, so its reader stops at once; `ended` then says why.
    """

    def __init__(self, expected_ssrc: int | None, *, reorder_window: int = 64, queue_size: int = 256,
                 channel_id: str = "") -> None:
        self.expected_ssrc = expected_ssrc
        self.reorder = ReorderBuffer(reorder_window)
        self.demux = PsDemuxer()
        self.units: queue.Queue[AccessUnit] = queue.Queue(maxsize=queue_size)
        self.stats = MediaStats()
        self.closed = False
        self.ended = ""  # why the stream ended on the device's side (TCP connection gone), if it did
        self.port = 0
        self._locked = False
        self._log = log.bind(channel=channel_id)
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: list[asyncio.StreamWriter] = []

    # --- packet path (pure in-process logic, also used directly by tests) ---------------------
    def on_rtp(self, data: bytes) -> None:
        try:
            pkt = parse_rtp(data)
        except ParseError as err:
            self.stats.bad_rtp += 1
            self._log.debug("rtp_rejected", error=str(err))
            return
        if self.expected_ssrc is not None and pkt.ssrc != self.expected_ssrc:
            if self._locked:
                self.stats.foreign_ssrc += 1
                return
            self._log.info("rtp_ssrc_rebind", offered=self.expected_ssrc, actual=pkt.ssrc)
            self.stats.ssrc_rebinds += 1
            self.expected_ssrc = pkt.ssrc
        self.expected_ssrc = pkt.ssrc
        self._locked = True
        self.stats.packets += 1
        self._demux(self.reorder.push(pkt))

    def _demux(self, packets: list[RtpPacket], *, last: bool = False) -> None:
        for p in packets:
            units = self.demux.feed(p.payload)
            if p.marker:
                units += self.demux.end_of_frame()
            for au in units:
                self._put(au)
        if last:  # the stream is over: what the reorder buffer and demuxer hold is all there is
            for au in self.demux.end_of_frame():
                self._put(au)

    def _put(self, au: AccessUnit) -> None:
        try:
            self.units.put_nowait(au)
            self.stats.units += 1
        except queue.Full:
            self.stats.dropped_units += 1

    def rebind(self, ssrc: int | None) -> None:
        if ssrc is not None and ssrc != self.expected_ssrc and not self._locked:
            self._log.info("rtp_ssrc_from_answer", offered=self.expected_ssrc, answered=ssrc)
            self.stats.ssrc_rebinds += 1
            self.expected_ssrc = ssrc

    # --- sockets -------------------------------------------------------------------------------
    @staticmethod
    def _candidate_ports(port_range: tuple[int, int]) -> list[int]:
        lo, hi = port_range
        return [0] if lo == 0 else list(range(lo, hi + 1))

    async def listen_udp(self, host: str, port_range: tuple[int, int]) -> int:
        loop = asyncio.get_running_loop()
        for port in self._candidate_ports(port_range):
            try:
                self._udp, _ = await loop.create_datagram_endpoint(lambda: _UdpMedia(self), local_addr=(host, port))
            except OSError:
                continue
            sock = self._udp.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            self.port = sock.getsockname()[1]
            return self.port
        raise RetryLater(f"no free UDP media port in {port_range}")

    async def listen_tcp(self, host: str, port_range: tuple[int, int]) -> int:
        for port in self._candidate_ports(port_range):
            try:
                self._server = await asyncio.start_server(self._read_stream, host, port)
            except OSError:
                continue
            self.port = self._server.sockets[0].getsockname()[1]
            return self.port
        raise RetryLater(f"no free TCP media port in {port_range}")

    async def connect_tcp(self, host: str, port: int, timeout: float) -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (TimeoutError, OSError) as err:
            raise RetryLater(f"cannot connect to device media port {host}:{port}: {err}") from err
        task = asyncio.create_task(self._read_stream(reader, writer), name=f"gb-media-tcp-{port}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._writers.append(writer)
        deframer = TcpRtpDeframer()
        ended = "the device closed the TCP media connection"
        try:
            while data := await reader.read(65536):
                try:
                    packets = deframer.feed(data)
                except ParseError as err:
                    self._log.warning("rtp_tcp_framing", error=str(err))
                    ended = f"unreadable RTP framing on the TCP media connection ({err})"
                    break
                for pkt in packets:
                    self.on_rtp(pkt)
        except ConnectionError as err:
            ended = f"the TCP media connection failed ({type(err).__name__}: {err})"
        except asyncio.CancelledError:
            ended = ""  # our close(): asyncio 3.11 logs a cancelled client_connected_cb task as an error
        finally:
            writer.close()
            if ended and not self.closed:  # no more media can come: the session is over
                self._demux(self.reorder.flush(), last=True)
                self.ended, self.closed = ended, True
            self._log.info("rtp_tcp_closed", ended=self.ended or "by us", packets=self.stats.packets)

    async def close(self) -> None:
        self.closed = True
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
        for w in self._writers:
            w.close()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
