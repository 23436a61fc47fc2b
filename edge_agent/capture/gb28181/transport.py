"""SIP over UDP and TCP on one port: receives messages and sends them back to a peer address."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from edge_agent.capture.gb28181.sip import SipStreamFramer
from edge_agent.errors import ParseError

log = structlog.get_logger(__name__)

Handler = Callable[[bytes, tuple[str, int], str], None]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.handler(data, (addr[0], addr[1]), "udp")

    def error_received(self, exc: Exception) -> None:
        log.warning("sip_udp_error", error=str(exc))


class SipTransport:
    def __init__(self, host: str, port: int, handler: Handler) -> None:
        self.host, self.port, self.handler = host, port, handler
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._conns: dict[tuple[str, int], asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self.handler), local_addr=(self.host, self.port))
        self._tcp = await asyncio.start_server(self._read_tcp, self.host, self.port)
        log.info("sip_listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for w in list(self._conns.values()):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()

    async def _read_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        peer = writer.get_extra_info("peername")
        addr = (peer[0], peer[1])
        self._conns[addr] = writer
        framer = SipStreamFramer()
        try:
            while data := await reader.read(65536):
                try:
                    for msg in framer.feed(data):
                        self.handler(msg, addr, "tcp")
                except ParseError as err:
                    log.warning("sip_tcp_garbage", peer=f"{addr[0]}:{addr[1]}", error=str(err))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # ending normally: asyncio 3.11 logs a cancelled client_connected_cb task as an error
        finally:
            self._conns.pop(addr, None)
            writer.close()

    def send(self, data: bytes, addr: tuple[str, int], transport: str) -> bool:
        if transport == "udp":
            if self._udp is None:
                return False
            self._udp.sendto(data, addr)
            return True
        w = self._conns.get(addr)
        if w is None or w.is_closing():
            log.warning("sip_tcp_peer_gone", peer=f"{addr[0]}:{addr[1]}")
            return False
        w.write(data)
        return True
