"""The edge agent: cameras → sampler → motion gate → detector → tracker → rules → events → outbox.

Threads: one decode thread per camera stream (PyAV decodes without the GIL), `detector.workers`
inference workers (each with its own interpreter, which invokes without the GIL, and a fixed share
of the cameras) that also run those cameras' tracker, rules and event emitters, and the uplink's
own thread. One stop event; everything joins within `join_timeout_s`.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from bk_common import sdnotify
from bk_contract import Alert, CameraHealth
from edge_agent import __version__
from edge_agent.analysis.planner import CameraDemand, ChannelPlan, plan_channels
from edge_agent.analysis.tracker import IouTracker
from edge_agent.app.camera_worker import CameraWorker, SampledFrame
from edge_agent.app.command_handlers import agent_handlers, live_profile, recorder_for, telemetry_extras, wire_collector
from edge_agent.app.commands import CommandDispatcher
from edge_agent.app.config_push import ConfigControl
from edge_agent.app.supervisor import Supervisor
from edge_agent.capture.sources import FrameSource, open_source
from edge_agent.capture.stream_reader import StreamReader
from edge_agent.config import AgentConfig, CameraConfig
from edge_agent.events.emitter import EventEmitter, EventStore
from edge_agent.live.manager import LiveManager
from edge_agent.rules.engine import Observation, OfflineMonitor, RuleEngine

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PipelineTuning:
    """Timing and tracking constants that are not (yet) in the config; tests set them small."""

    queue_per_camera: int = 2  # sampled frames waiting for the detector; the oldest is dropped
    grace_s: float = 2.0  # a condition may vanish this long without ending/restarting its event
    update_min_s: float = 10.0  # at most one `update` per event this often
    healthy_after_s: float = 30.0  # a stream up this long resets the reconnect back-off
    housekeeping_s: float = 0.5  # how often camera health is turned into camera_offline events
    join_timeout_s: float = 10.0
    track_iou: float = 0.3
    track_max_misses: int = 5
    track_max_age_s: float = 3.0
    track_history: int = 9
    phone_min_score: float | None = None  # median score a phone track needs (default: the rule's min_score)
    stuck_after_s: float = 60.0  # a decode thread or inference worker whose heartbeat stood this long is restarted
    restart_min_s: float = 1.0  # back-off between restarts of the same thread: doubles up to restart_max_s
    restart_max_s: float = 300.0
    give_up_after: int = 5  # restarts of one thread within give_up_window_s before the watchdog is left to expire
    give_up_window_s: float = 600.0
    ready_timeout_s: float = 30.0  # READY=1 once every camera made its first attempt, or after this long
    replan_s: float = 10.0  # the channel plan is redone from the ms measured in the pipeline this often ...
    replan_change: float = 0.2  # ... when that differs from the planned ms by more than this fraction


@dataclass
class CameraPipeline:
    """Per-camera state the inference worker keeps: tracker, rules, offline monitor, emitter."""

    worker: CameraWorker
    tracker: IouTracker
    rules: RuleEngine
    offline: OfflineMonitor
    emitter: EventEmitter
    queue: deque[SampledFrame] = field(default_factory=deque)
    dropped: int = 0
    detections: int = 0
    size: tuple[int, int] | None = None


class Agent:
    def __init__(self, cfg: AgentConfig, *, detector=None, outbox: EventStore | None = None,
                 uplink_factory: Callable[..., object] | None = None,
                 on_event: Callable[[Alert], None] | None = None,
                 source_factory: Callable[[CameraConfig, bool], FrameSource] | None = None,
                 tuning: PipelineTuning | None = None, wall: Callable[[], float] = time.time,
                 variant_timer: Callable[..., float] | None = None,
                 config_control: ConfigControl | None = None) -> None:
        self.cfg = cfg
        self.config_control = config_control  # remote configuration (edge-agent run gives one)
        self.variant_timer = variant_timer  # (model path, threads, runs) -> ms; tests inject timings
        self.model_path = cfg.detector.model
        self.variant = None  # VariantChoice when the variants were timed at start
        self.plan: ChannelPlan | None = None
        self._planned_at = 0.0
        self.detectors = [detector] if detector is not None else []
        self.outbox = outbox
        self.uplink_factory = uplink_factory
        self.on_event = on_event
        self.source_factory = source_factory
        self.tuning = tuning or PipelineTuning()
        self.wall = wall
        self.uplink = None
        self.commands: CommandDispatcher | None = None  # the cloud's commands, when the uplink is on
        self.live: LiveManager | None = None  # live view sessions, when the uplink is on
        self.gb = None  # GbBridge when gb28181.enabled: the SIP server thread for GB/T 28181 cameras
        self.cameras: dict[str, CameraPipeline] = {}
        self._cond = threading.Condition()
        self._owns_outbox = outbox is None
        self.inference_ms = 0.0
        self.worker_beats: list[float] = []  # heartbeat (monotonic) of each inference worker
        self._worker_gen: list[int] = []  # current generation of each inference worker
        self.supervisor: Supervisor | None = None
        self.last_pass: float | None = None  # monotonic time of the supervisor loop's last pass
        self.status_http = None  # StatusServer on 127.0.0.1:status_port while running
        self.log = log.bind(device=cfg.device.id)

    # --- wiring ----------------------------------------------------------------------------
    def _build(self) -> None:
        cfg, tu = self.cfg, self.tuning
        if not self.detectors:  # one interpreter per inference worker: an interpreter is not thread-safe
            self._injected_detector = False
            if cfg.detector.choose_variant:
                self._choose_variant()
            self.detectors = [self._new_detector() for _ in range(cfg.detector.workers)]
        else:
            self._injected_detector = True
        if self.outbox is None:
            from edge_agent.outbox.store import Outbox

            self.outbox = Outbox(cfg.storage.path, device_id=cfg.device.id,
                                 quota_bytes=int(cfg.storage.quota_mb * (1 << 20)), chunk_bytes=cfg.uplink.chunk_bytes)
        if cfg.gb28181.enabled:
            from edge_agent.capture.gb_bridge import GbBridge

            self.gb = GbBridge(cfg.gb28181, wall=self.wall, on_device_change=self._wake_gb_cameras)
        for cam in cfg.cameras:
            if not cam.enabled:
                continue
            worker = CameraWorker(cam, cfg.detector, cfg.motion, submit=self._submit,
                                  source_factory=self.source_factory or self._open_source, wall=self.wall,
                                  healthy_after_s=tu.healthy_after_s, clip_pre_s=cam.clip_pre_s,
                                  clip_post_s=cam.clip_post_s,
                                  detect_fit=getattr(self.detectors[0], "input_size", None))
            self.cameras[cam.id] = CameraPipeline(
                worker=worker,
                tracker=IouTracker(iou_threshold=tu.track_iou, max_misses=tu.track_max_misses,
                                   max_age_s=tu.track_max_age_s, history=tu.track_history),
                rules=RuleEngine(cam.rules, tz=cfg.device.timezone, grace_s=tu.grace_s,
                                 update_min_s=tu.update_min_s, phone_min_score=tu.phone_min_score),
                offline=OfflineMonitor(cam.offline_after_s),
                emitter=EventEmitter(cfg.device.id, cam.id, self.outbox, self.on_event),
                queue=deque(maxlen=tu.queue_per_camera),
            )
        wire_collector(self)  # the consented frame collector, on cameras that enable it (edge_agent/collect)
        if self.variant is not None:
            self._plan_channels(self.variant.chosen.ms)
        if cfg.uplink.enabled:
            factory = self.uplink_factory
            if factory is None:
                from edge_agent.uplink.client import Uplink as factory  # noqa: N813
            self.uplink = factory(cfg.uplink, device_id=cfg.device.id, outbox=self.outbox,
                                  n_cameras=len(self.cameras), status=self.health, version=__version__,
                                  inference_ms=lambda: self.inference_ms)
            self.live = LiveManager(cfg.device.id, self.outbox, live_profile(cfg), uplink=lambda: self.uplink)
            for cp in self.cameras.values():
                cp.worker.live_offer = self.live.offer
                cp.worker.recorder = recorder_for(cfg, cp.worker.cam.id)
            self.uplink.telemetry_extras = lambda: telemetry_extras(self)
            self.commands = CommandDispatcher(cfg.device.id, self.outbox, agent_handlers(self))
            self.uplink.on_command = self.commands.submit  # the uplink subscribes to `cmd` once this is set

    def _new_detector(self):  # noqa: ANN202 - a Detector plugin
        from edge_agent.analysis.detector import create_detector

        d = self.cfg.detector
        return create_detector(d.type, self.model_path, num_threads=d.threads, score_threshold=d.score_threshold,
                               iou_threshold=d.iou_threshold)

    def _choose_variant(self) -> None:
        """Time each variant of the configured model on this CPU and use the chosen one."""
        from edge_agent.analysis.detector.variants import cpu_summary, select_variant, time_detect_ms

        d = self.cfg.detector
        self.variant = select_variant(d.model, d.threads, d.max_accuracy_loss, d.variant_runs,
                                      timer=self.variant_timer or time_detect_ms)
        self.model_path = self.variant.chosen.path
        self.log.info("detector_variant_chosen", threads=d.threads, cpu=cpu_summary(), **self.variant.as_dict())

    def _plan_channels(self, ms: float, source: str = "start") -> None:
        """Detections per second each camera gets from the measured ms; its sampler is set to that.

        `source` "start": the variant timing alone; "pipeline": detect() time measured while the
        cameras decode (slower when decoding and other work share the cores)."""
        d = self.cfg.detector
        parallel = max(1, min(len(self.detectors), (os.cpu_count() or 1) // d.threads))
        demands = [CameraDemand(cid, d.sample_fps, cp.worker.motion_cfg.enabled) for cid, cp in self.cameras.items()]
        self.plan = plan_channels(ms, demands, parallel)
        self._planned_at = time.monotonic()
        for cid, fps in self.plan.per_camera.items():
            self.cameras[cid].worker.sampler.period = 1.0 / fps
        at = self.plan.channels_at(d.sample_fps)
        (self.log.info if self.plan.sustained else self.log.warning)(
            "channel_plan", source=source, channels_at_sample_fps=at, sample_fps=d.sample_fps, **self.plan.as_dict())

    def _replan_if_moved(self) -> None:
        """Redo the plan from the ms the inference workers measure, when it moved away from the plan's."""
        plan, tu, ms = self.plan, self.tuning, self.inference_ms
        if plan is None or not ms or time.monotonic() - self._planned_at < tu.replan_s:
            return
        if abs(ms / plan.ms_per_detection - 1.0) > tu.replan_change:
            self._plan_channels(ms, source="pipeline")

    def _open_source(self, cam: CameraConfig, sub: bool) -> FrameSource:
        return open_source(cam, sub=sub, gb=self.gb.source if self.gb is not None else None)

    def _wake_gb_cameras(self, device_id: str) -> None:
        """A GB device came online, sent its catalog or was refused (SIP loop thread): its offline
        cameras retry now instead of after their back-off."""
        if self.gb is None:
            return
        woken = [cid for cid, cp in self.cameras.items()
                 if not cp.worker.reader.connected and self.gb.device_of(cp.worker.cam) == device_id]
        for cid in woken:
            self.cameras[cid].worker.wake()
        if woken:
            self.log.info("gb_cameras_woken", gb_device=device_id, cameras=woken)

    def _submit(self, sf: SampledFrame) -> None:
        """Called from decode threads: queue the newest frame, dropping the oldest when full."""
        cp = self.cameras[sf.camera_id]
        with self._cond:
            if len(cp.queue) == cp.queue.maxlen:
                cp.dropped += 1
            cp.queue.append(sf)
            self._cond.notify_all()

    # --- running ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Start every thread, then supervise them here (housekeeping, stuck threads, systemd's
        watchdog) until `stop`; then join everything."""
        self._build()
        if self.config_control is not None:
            self.config_control.stop_agent = stop.set
        if self.uplink is not None and self.config_control is not None:
            self.uplink.extra_problems = self.config_control.problems
        if self.gb is not None:
            self.gb.start()  # a bind failure is logged and shown in the GB cameras' health
        if self.commands is not None:
            self.commands.start()
        if self.uplink is not None:
            self.uplink.start()
        for cp in self.cameras.values():
            cp.worker.start(stop)
        self.worker_beats = [time.monotonic()] * len(self.detectors)
        self._worker_gen = [0] * len(self.detectors)
        workers = [self._start_worker(i, stop) for i in range(len(self.detectors))]
        self.log.info("agent_started", cameras=list(self.cameras), uplink=self.uplink is not None,
                      inference_workers=len(self.detectors))
        tu = self.tuning
        self.supervisor = Supervisor(self, stuck_after_s=tu.stuck_after_s, restart_min_s=tu.restart_min_s,
                                     restart_max_s=tu.restart_max_s, give_up_after=tu.give_up_after,
                                     give_up_window_s=tu.give_up_window_s)
        if self.cfg.status_port:
            from edge_agent.app.status_http import StatusServer

            try:
                self.status_http = StatusServer(self, self.cfg.status_port)
                self.status_http.start()
            except OSError as err:  # the port in use: the agent runs on without its status page
                self.log.error("status_http_failed", port=self.cfg.status_port, error=str(err))
        try:
            self._supervise(stop)
        finally:
            stop.set()
            sdnotify.notify("STOPPING=1")
            if self.status_http is not None:
                self.status_http.stop()
            deadline = time.monotonic() + self.tuning.join_timeout_s
            for t in workers:
                t.join(max(0.0, deadline - time.monotonic()))
            for cp in self.cameras.values():
                if not cp.worker.join(max(0.0, deadline - time.monotonic())):
                    self.log.warning("decode_thread_still_running", camera=cp.worker.cam.id)
            if self.gb is not None:  # after the decode threads: their BYEs go through its loop
                self.gb.stop(max(0.1, deadline - time.monotonic()))
            if self.uplink is not None:
                self.uplink.stop(max(0.1, deadline - time.monotonic()))
            if self.commands is not None:
                self.commands.stop(max(0.1, deadline - time.monotonic()))
            if self.live is not None:
                self.live.close()
            if self._owns_outbox and self.outbox is not None:
                self.outbox.close()
            self.log.info("agent_stopped")

    def _supervise(self, stop: threading.Event) -> None:
        """The main loop: camera health into offline events, stuck threads restarted, READY=1 once the
        cameras made their first attempt, WATCHDOG=1 after every pass that found nothing stuck."""
        assert self.supervisor is not None
        started = time.monotonic()
        ready = False
        while not stop.is_set():
            self._housekeeping()
            self.supervisor.step(stop)
            self.last_pass = time.monotonic()
            if not ready and (all(r.attempted.is_set() for _, r in self.readers())
                              or time.monotonic() - started >= self.tuning.ready_timeout_s):
                ready = True
                online = sum(cp.worker.reader.connected for cp in self.cameras.values())
                sdnotify.notify("READY=1", f"STATUS=摄像头在线 {online}/{len(self.cameras)}")
                self.log.info("agent_ready", cameras_online=online, cameras=len(self.cameras))
            stop.wait(self.tuning.housekeeping_s)

    def readers(self) -> list[tuple[CameraWorker, StreamReader]]:
        return [(cp.worker, r) for cp in self.cameras.values() for r in cp.worker.readers]

    def _start_worker(self, index: int, stop: threading.Event) -> threading.Thread:
        t = threading.Thread(target=self._inference_loop, args=(stop, index, self._worker_gen[index]),
                             name=f"inference-{index}-{self._worker_gen[index]}", daemon=True)
        t.start()
        return t

    def restart_worker(self, index: int, stop: threading.Event) -> None:
        """Abandon inference worker `index` (stuck in its detector) and start it again with a new one."""
        self._worker_gen[index] += 1
        self.worker_beats[index] = time.monotonic()
        if not self._injected_detector:  # the old interpreter may still be inside invoke()
            self.detectors[index] = self._new_detector()
        self._start_worker(index, stop)

    def _inference_loop(self, stop: threading.Event, index: int, generation: int = 0) -> None:
        """Worker `index` serves every n-th camera, so each camera's frames stay in order in one
        thread (its tracker and rules are not shared)."""
        mine = list(self.cameras.values())[index::len(self.detectors)]
        detector = self.detectors[index]
        while not stop.is_set() and generation == self._worker_gen[index]:
            self.worker_beats[index] = time.monotonic()
            batch: list[SampledFrame] = []
            with self._cond:
                if not any(cp.queue for cp in mine):
                    self._cond.wait(self.tuning.housekeeping_s)
                for cp in mine:  # round-robin: one frame per camera per pass
                    if cp.queue:
                        batch.append(cp.queue.popleft())
            for sf in batch:
                if stop.is_set() or generation != self._worker_gen[index]:
                    break
                self._process(sf, detector)
                self.worker_beats[index] = time.monotonic()

    def _process(self, sf: SampledFrame, detector) -> None:
        cp = self.cameras[sf.camera_id]
        try:
            if sf.rgb is not None:
                t0 = time.perf_counter()
                dets = detector.detect(sf.rgb)
                ms = (time.perf_counter() - t0) * 1000
                self.inference_ms = ms if not self.inference_ms else 0.9 * self.inference_ms + 0.1 * ms
                cp.detections += 1
                cp.size = (sf.rgb.shape[1], sf.rgb.shape[0])
                tracks = cp.tracker.update(dets, sf.t)
            else:
                tracks = cp.tracker.tracks  # no motion: the scene is as it was
            if cp.size is None:
                return
            obs = Observation(sf.t, tracks, cp.size[0], cp.size[1], frame=sf.frame)
            for tr in cp.rules.step(obs):
                cp.emitter.emit(tr)
        except Exception:  # noqa: BLE001 - one camera's bad frame never stops the others
            self.log.exception("frame_failed", camera=sf.camera_id)

    def _housekeeping(self) -> None:
        self._replan_if_moved()
        if self.config_control is not None:
            self.config_control.step({c: cp.worker.online()[0] for c, cp in self.cameras.items()}, time.monotonic())
        now = self.wall()
        for cp in self.cameras.values():
            online, since = cp.worker.online()
            tr = cp.offline.step(online, since, now)
            if tr is not None:
                cp.emitter.emit(tr)

    # --- status ----------------------------------------------------------------------------
    def health(self) -> list[CameraHealth]:
        return [cp.worker.health() for cp in self.cameras.values()]

    def stats(self) -> dict:
        """Per camera: frames decoded/sampled/sent to the detector/dropped; inference time."""
        return {
            "inference_ms": round(self.inference_ms, 1),
            "detector": {"model": self.model_path.name if self.model_path else None,
                         **({"choice": self.variant.as_dict()} if self.variant is not None else {})},
            "plan": self.plan.as_dict() if self.plan is not None else None,
            "thread_restarts": dict(self.supervisor.restarts) if self.supervisor else {},
            "cameras": {cid: {"decoded": cp.worker.reader.frames, "sampled": cp.worker.sampled,
                              "detect_frames": cp.worker.detect_frames, "detections": cp.detections,
                              "dropped": cp.dropped}
                        for cid, cp in self.cameras.items()},
            **({"gb28181": self.gb.status()} if self.gb is not None else {}),
        }
