"""Catalog queries of the SIP server: ask, collect the pages, and ask again while none arrives.

A Catalog answer is a MESSAGE from the device, sent after its 200 to our query; over UDP it can be
lost with nothing retransmitting it. So after a device comes online the server asks until a
complete catalog has arrived since then: the next query goes out `catalog_retry_s` after the first,
and the interval doubles after each unanswered one up to `catalog_retry_max_s`. Any complete
catalog of the device (pages of an earlier query arriving late included) answers every pending query.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from edge_agent.capture.gb28181.manscdp import CatalogItem, build_query
from edge_agent.capture.gb28181.registry import ChannelInfo, Device
from edge_agent.errors import RetryLater

log = structlog.get_logger(__name__)


class CatalogMixin:
    """Mixed into GbSipServer; relies on its cfg, registry, request_timeout_s, request, _emit, _spawn, _next_sn."""

    def __init__(self) -> None:
        self._catalog_waiters: dict[tuple[str, int], asyncio.Future[None]] = {}
        self._catalog_tasks: dict[str, asyncio.Task] = {}

    def _collect_catalog(self, dev: Device, sn: int, sum_num: int, items: list[CatalogItem]) -> None:
        total, got = dev.pending_catalog.get(sn, (sum_num, {}))
        for it in items:
            got[it.device_id] = it
        if len(got) < total:
            dev.pending_catalog[sn] = (total, got)
            return
        dev.pending_catalog.pop(sn, None)
        dev.channels = got
        dev.catalog_at = time.monotonic()
        self._emit("catalog", dev.device_id, channels=sorted(got), sum_num=total)  # type: ignore[attr-defined]
        for key in [k for k in self._catalog_waiters if k[0] == dev.device_id]:
            fut = self._catalog_waiters.pop(key)
            if not fut.done():
                fut.set_result(None)

    async def query_catalog(self, device_id: str, timeout: float | None = None) -> list[ChannelInfo]:
        """Ask a device for its catalog and wait until every page (SumNum items) has arrived.

        `timeout` bounds the whole query (default twice the request timeout); RetryLater says
        what was missing when it passes.
        """
        dev = self.registry.devices.get(device_id)  # type: ignore[attr-defined]
        if dev is None or not dev.online:
            raise RetryLater(f"GB device {device_id} is not registered")
        loop = asyncio.get_running_loop()
        total_s = timeout or self.request_timeout_s * 2  # type: ignore[attr-defined]
        deadline = loop.time() + total_s
        sn = self._next_sn()  # type: ignore[attr-defined]
        fut: asyncio.Future[None] = loop.create_future()
        self._catalog_waiters[(device_id, sn)] = fut
        try:
            resp = await self.request(  # type: ignore[attr-defined]
                dev, "MESSAGE", f"sip:{device_id}@{dev.addr[0]}:{dev.addr[1]}", device_id,
                body=build_query("Catalog", sn, device_id), ctype="Application/MANSCDP+xml",
                timeout=min(self.request_timeout_s, total_s))  # type: ignore[attr-defined]
            if resp.status != 200:
                raise RetryLater(f"GB device {device_id} answered the Catalog query with {resp.status} {resp.reason}")
            try:
                await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
            except TimeoutError as err:
                pending = dev.pending_catalog.get(sn)
                got = (f"{len(pending[1])} of {pending[0]} items arrived" if pending is not None
                       else "no Catalog response arrived")
                raise RetryLater(f"GB device {device_id} accepted the Catalog query (SN {sn}) but sent no complete "
                                 f"catalog within {total_s:g} s: {got}") from err
        finally:
            self._catalog_waiters.pop((device_id, sn), None)
        return [c for c in self.channels() if c.device_id == device_id]  # type: ignore[attr-defined]

    # --- re-query while no catalog ---------------------------------------------------------------
    def _start_catalog_queries(self, device_id: str) -> None:
        """Query the catalog of a device that came online, and again with back-off until one arrives."""
        self._stop_catalog_queries(device_id)
        task = self._spawn(self._query_until_answered(device_id, time.monotonic()),  # type: ignore[attr-defined]
                           f"gb-catalog-{device_id}")
        self._catalog_tasks[device_id] = task
        task.add_done_callback(lambda t: self._catalog_tasks.pop(device_id, None)
                               if self._catalog_tasks.get(device_id) is t else None)

    def _stop_catalog_queries(self, device_id: str) -> None:
        task = self._catalog_tasks.pop(device_id, None)
        if task is not None:
            task.cancel()

    def _catalog_missing(self, device_id: str, since: float) -> bool:
        dev = self.registry.devices.get(device_id)  # type: ignore[attr-defined]
        return dev is not None and dev.online and dev.catalog_at < since

    async def _query_until_answered(self, device_id: str, since: float) -> None:
        loop = asyncio.get_running_loop()
        interval = self.cfg.catalog_retry_s  # type: ignore[attr-defined]
        attempt = 0
        while self._catalog_missing(device_id, since):
            attempt += 1
            next_at = loop.time() + interval
            try:
                await self.query_catalog(device_id, timeout=interval)
                return
            except RetryLater as err:
                if not self._catalog_missing(device_id, since):
                    return  # pages of an earlier query completed meanwhile, or the device went offline
                interval = min(interval * 2, self.cfg.catalog_retry_max_s)  # type: ignore[attr-defined]
                wait = max(0.0, next_at - loop.time())
                log.warning("gb_catalog_failed", device=device_id, attempt=attempt, error_type=type(err).__name__,
                            error=str(err), cause=type(err.__cause__).__name__ if err.__cause__ else None,
                            retry_in_s=round(wait, 3), interval_s=interval)
            await asyncio.sleep(wait)
