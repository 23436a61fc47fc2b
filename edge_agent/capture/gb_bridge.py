"""GB/T 28181 cameras in the running agent: the SIP server on its own loop thread, one source per camera.

`GbBridge` runs `GbSipServer` on an asyncio loop in the named thread `gb28181-sip` (started and
stopped by the Agent). The server's events (called on that loop) keep a thread-safe picture of the
devices: online or not and why, registration refused, catalog channels. Camera decode threads open
a `GbCameraSource`, which checks that picture first (so a device that never registered gives a
clear error in the camera's health instead of a bare INVITE failure), then streams through
`GbChannelSource`. When the server reports `device_offline`, every session of that device is
stopped and its source raises `RetryLater` naming the reason; the camera goes offline and the
`camera_offline` event follows after `offline_after_s`, as for any other camera. When a device
comes (back) online, sends its catalog or has its registration refused, `on_device_change(device_id)`
tells the Agent, which wakes that device's offline cameras out of their reconnect back-off
(`StreamReader.wake`): they stream within a second instead of after up to `reconnect_max_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import av
import structlog

from edge_agent.capture.gb28181 import GbChannelSource, GbEvent, GbSipServer
from edge_agent.config import CameraConfig, GbConfig
from edge_agent.errors import NeedsHuman, RetryLater

log = structlog.get_logger(__name__)

# events after which a device's offline cameras should retry now: they may stream, or their health
# should say why not (a refused registration is `needs human`, not "not registered")
WAKE_KINDS = ("device_online", "catalog", "registration_rejected")


@dataclass
class GbDeviceState:
    """What the agent knows of one device, from the server's events."""

    online: bool = False
    reason: str = ""  # why it is offline, or why its registration was refused
    refused: bool = False  # last REGISTER was refused (wrong or missing password)
    catalog: bool = False  # a complete catalog has arrived at least once
    channels: tuple[str, ...] = ()
    changed_at: float = 0.0  # wall clock of the last online/offline change


class SessionStop(threading.Event):
    """Stop flag of one GB session: set when its device goes offline; also reads as set once the
    agent's stop event is set, so `GbChannelSource` leaves its decode loop for either reason."""

    def __init__(self, parent: threading.Event) -> None:
        super().__init__()
        self.parent = parent
        self.reason = ""

    def is_set(self) -> bool:
        return super().is_set() or self.parent.is_set()

    def device_offline(self, reason: str) -> None:
        self.reason = reason
        self.set()


@dataclass
class _Watches:
    by_device: dict[str, set[SessionStop]] = field(default_factory=dict)


class GbBridge:
    """Owns the SIP server thread and the device picture; builds sources for gb28181 cameras."""

    def __init__(self, cfg: GbConfig, *, on_event: Callable[[GbEvent], None] | None = None,
                 on_device_change: Callable[[str], None] | None = None,
                 server_factory: Callable[..., GbSipServer] = GbSipServer, start_timeout_s: float = 10.0,
                 wall: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.on_event = on_event
        self.on_device_change = on_device_change  # loop thread: a WAKE_KINDS event of this device
        self.server_factory = server_factory
        self.start_timeout_s = start_timeout_s
        self.wall = wall
        self.server: GbSipServer | None = None
        self.error = ""  # why the server is not running (bind failure), for the cameras' health
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._devices: dict[str, GbDeviceState] = {}
        self._watches = _Watches()
        self.log = log.bind(sip=f"{cfg.host}:{cfg.port}")

    # --- lifecycle (Agent thread) --------------------------------------------------------------
    def start(self) -> bool:
        """Start the loop thread and wait until the server listens. A failure (port taken) is
        logged and kept in `error`; the agent goes on, its GB cameras report the error."""
        self._thread = threading.Thread(target=self._main, name="gb28181-sip", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.start_timeout_s):
            self.error = f"GB/T 28181 SIP server did not start within {self.start_timeout_s}s"
        if self.error:
            self.log.error("gb_server_failed", error=self.error)
            return False
        self.log.info("gb_server_started", server_id=self.cfg.server_id, realm=self.cfg.realm)
        return True

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the server (BYE to open sessions, close sockets) and join the thread."""
        loop, thread = self._loop, self._thread
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed between the check and the call
                loop.call_soon_threadsafe(loop.stop)
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            self.log.warning("gb_thread_still_running")
            return False
        return True

    @property
    def running(self) -> bool:
        return self._ready.is_set() and not self.error and self._thread is not None and self._thread.is_alive()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            self.server = self.server_factory(self.cfg, on_event=self._on_event)
            loop.run_until_complete(self.server.start())
        except OSError as err:
            self.error = f"GB/T 28181 SIP server cannot listen on {self.cfg.host}:{self.cfg.port}: {err}"
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(asyncio.wait_for(self.server.stop(), 8.0))
            except Exception:  # noqa: BLE001 - shutting down; log and close the loop anyway
                self.log.exception("gb_server_stop_failed")
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self.log.info("gb_server_stopped")

    # --- events (loop thread) ------------------------------------------------------------------
    def _on_event(self, ev: GbEvent) -> None:
        stopped: list[SessionStop] = []
        with self._lock:
            st = self._devices.setdefault(ev.device_id, GbDeviceState())
            if ev.kind == "device_online":
                st.online, st.reason, st.refused, st.changed_at = True, "", False, self.wall()
            elif ev.kind == "device_offline":
                st.online, st.changed_at = False, self.wall()
                st.reason = str(ev.detail.get("reason", "offline"))
                stopped = list(self._watches.by_device.get(ev.device_id, ()))
            elif ev.kind == "registration_rejected":
                st.refused = True
                st.reason = str(ev.detail.get("reason", "registration refused"))
            elif ev.kind == "catalog":
                st.catalog = True
                st.channels = tuple(ev.detail.get("channels", ()))
        for s in stopped:
            s.device_offline(st.reason)
        if stopped:
            self.log.warning("gb_sessions_stopped", device=ev.device_id, reason=st.reason, sessions=len(stopped))
        if ev.kind in WAKE_KINDS and self.on_device_change is not None:
            try:
                self.on_device_change(ev.device_id)
            except Exception:  # noqa: BLE001 - a waker's bug never stops the SIP loop
                self.log.exception("gb_device_change_failed", device=ev.device_id)
        if self.on_event is not None:
            self.on_event(ev)

    # --- what decode threads ask -----------------------------------------------------------------
    def device(self, device_id: str) -> GbDeviceState | None:
        with self._lock:
            st = self._devices.get(device_id)
            return None if st is None else GbDeviceState(**st.__dict__)

    def status(self) -> dict:
        """Devices as the agent sees them (for stats)."""
        with self._lock:
            return {"running": self.running, "error": self.error,
                    "devices": {d: {"online": s.online, "reason": s.reason, "channels": len(s.channels)}
                                for d, s in self._devices.items()}}

    def owner_of(self, channel_id: str) -> str | None:
        """The device whose catalog lists `channel_id` (or the device of that id itself)."""
        with self._lock:
            for d, s in self._devices.items():
                if channel_id in s.channels:
                    return d
            return channel_id if channel_id in self._devices else None

    def device_of(self, cam: CameraConfig) -> str | None:
        """The device a gb28181 camera streams from: its `gb_device_id`, else its channel's catalog owner."""
        if cam.source.type != "gb28181":
            return None
        return cam.source.gb_device_id or self.owner_of(cam.source.gb_channel_id or "")

    def check(self, device_id: str | None, channel_id: str) -> str:
        """The device to stream `channel_id` from, or RetryLater / NeedsHuman saying why not."""
        if self.error:
            raise NeedsHuman(self.error)
        if not self.running:
            raise RetryLater("GB/T 28181 SIP server is not running")
        device_id = device_id or self.owner_of(channel_id)
        where = f"SIP server {self.cfg.server_id} at {self.cfg.media_ip}:{self.cfg.port}, realm {self.cfg.realm}"
        if device_id is None:
            raise RetryLater(f"GB channel {channel_id} is not in the catalog of any registered device ({where})")
        st = self.device(device_id)
        if st is None:
            raise RetryLater(f"GB device {device_id} has not registered with this box ({where})")
        if st.refused and not st.online:
            raise NeedsHuman(f"GB device {device_id}: registration refused ({st.reason}); "
                             "check gb28181.device_password_envs / password_env")
        if not st.online:
            raise RetryLater(f"GB device {device_id} is offline ({st.reason or 'unknown'})")
        if channel_id != device_id and channel_id not in st.channels:
            if not st.catalog:
                raise RetryLater(f"GB device {device_id} is online but has not sent its catalog yet")
            listed = ", ".join(st.channels[:5]) + (" ..." if len(st.channels) > 5 else "")
            raise RetryLater(f"GB channel {channel_id} is not in device {device_id}'s catalog "
                             f"({len(st.channels)} channels: {listed or 'none'})")
        return device_id

    def watch(self, device_id: str, parent: threading.Event) -> SessionStop:
        s = SessionStop(parent)
        with self._lock:
            self._watches.by_device.setdefault(device_id, set()).add(s)
        return s

    def unwatch(self, device_id: str, s: SessionStop) -> None:
        with self._lock:
            self._watches.by_device.get(device_id, set()).discard(s)

    def source(self, cam: CameraConfig) -> GbCameraSource:
        return GbCameraSource(self, cam)


class GbCameraSource:
    """`FrameSource` of a gb28181 camera: check the device, INVITE, decode; stop when it goes offline."""

    def __init__(self, bridge: GbBridge, cam: CameraConfig) -> None:
        src = cam.source
        self.bridge = bridge
        self.cam = cam
        self.channel_id = src.gb_channel_id or ""
        self.device_id = src.gb_device_id
        self.transport = src.gb_media_transport
        self.name = f"{cam.id}/main"

    def frames(self, stop: threading.Event) -> Iterator[av.VideoFrame]:
        device_id = self.bridge.check(self.device_id, self.channel_id)
        session_stop = self.bridge.watch(device_id, stop)
        try:
            self.bridge.check(device_id, self.channel_id)  # again: an offline between check and watch
            assert self.bridge.server is not None
            inner = GbChannelSource(self.bridge.server, self.channel_id, transport=self.transport,
                                    media_timeout_s=self.cam.read_timeout_s,
                                    invite_timeout_s=self.cam.open_timeout_s, name=self.name)
            yield from inner.frames(session_stop)
        finally:
            self.bridge.unwatch(device_id, session_stop)
        if session_stop.reason and not stop.is_set():
            raise RetryLater(f"GB device {device_id} went offline ({session_stop.reason})")
