"""The edge agent in a thread for tests: config builder, a running-agent handle, a detector that sees a person everywhere (a fake, named as such)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bk_contract import Alert
from edge_agent.analysis.types import Box, Detection
from edge_agent.app.agent import Agent
from edge_agent.assets import MODELS_DIR
from edge_agent.config import AgentConfig
from edge_agent.outbox.store import Outbox
from support.waiting import wait_for

DEVICE = "64050200001180000001"


MODEL = MODELS_DIR / "nanodet-coco-int8.tflite"


def agent_config(tmp_path: Path, cameras: list[dict], **extra) -> AgentConfig:
    return AgentConfig.model_validate({
        "device": {"id": DEVICE}, "storage": {"path": str(tmp_path / "agent.db")},
        "uplink": {"enabled": False}, "cameras": cameras, **extra})


def uplink_to(broker, **extra) -> dict:
    """An agent's `uplink` section for a test broker (`host`, `port`): enabled, a budget no test runs into, the
    device password from BK_TEST_DEVICE_PASSWORD; `extra` adds or overrides keys."""
    return {"enabled": True, "budget_kbps_per_camera": 20000,
            "broker": {"host": broker.host, "port": broker.port, "password_env": "BK_TEST_DEVICE_PASSWORD"}, **extra}


class Running:
    """An Agent on its own thread, with the events it emitted."""

    def __init__(self, cfg: AgentConfig, **kw) -> None:
        self.events: list[Alert] = []
        self.outbox = Outbox(cfg.storage.path, device_id=cfg.device.id)
        self.agent = Agent(cfg, outbox=self.outbox, on_event=self.events.append, **kw)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.agent.run, args=(self.stop,), name="agent-test")

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        t0 = time.monotonic()
        self.thread.join(15)
        assert not self.thread.is_alive() and time.monotonic() - t0 < 10, "agent did not stop within 10 s"
        self.outbox.close()

    def wait_for(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        wait_for(pred, timeout, what, step=0.1, detail=lambda: f"health={self.agent.health()} stats="
                 f"{self.agent.stats()} events={[(e.camera_id, e.type, e.state) for e in self.events]}")

    def state(self, camera: str) -> str | None:
        """The camera's health state; None until the agent thread has built its cameras."""
        return next((h.state for h in self.agent.health() if h.id == camera), None)

    def offline_open(self, camera: str) -> bool:
        """A camera_offline event of `camera` has started and not ended."""
        states = [e.state for e in self.events if e.camera_id == camera and e.type == "camera_offline"]
        return bool(states) and states[-1] == "start"

    def started(self, camera: str, type_: str) -> list[Alert]:
        return [e for e in self.events if e.camera_id == camera and e.type == type_ and e.state == "start"]


def iou(a: list[float], b: list[float]) -> float:
    return Box(*a).iou(Box(*b))


class PersonEverywhere:
    """A stand-in detector: one person box in every frame; counts calls."""

    labels = ("person",)

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        self.calls += 1
        h, w = rgb.shape[:2]
        return [Detection("person", 0.9, Box(w * 0.3, h * 0.2, w * 0.6, h * 0.95))]
