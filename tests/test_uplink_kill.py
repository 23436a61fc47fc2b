"""Agent killed with SIGKILL while draining a backlog: after a restart every alert arrives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import bk_contract
from edge_agent.outbox.store import Outbox

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pytest
from support.uplink_broker import DEVICE, Broker, Receiver, agent_command, child_env  # noqa: E402

pytestmark = pytest.mark.system

N_ALERTS = 300
WINDOW = 20  # the uplink's default in-flight window


def test_sigkill_mid_drain_loses_no_alert(tmp_path):
    """kill -9 mid-drain, restart: each alert id arrives, duplicates only from the in-flight window."""
    broker = Broker(tmp_path / "broker").start()
    rx = Receiver(broker.port, topics=("bk/v1/+/alert", f"bk/v1/{DEVICE}/status")).start()
    db = tmp_path / "agent.db"
    box = Outbox(db, device_id=DEVICE)
    for i in range(N_ALERTS):
        box.add_event(bk_contract.Alert(id=f"EVT{i:05d}", device_id=DEVICE, camera_id="cam1", type="animal",
                                        started_at=datetime.now(UTC), detail="x" * 200))
    box.close()
    procs: list[subprocess.Popen] = []
    try:
        # slow budget (80 kbit/s = 10 kB/s ≈ 20 alerts/s) so the kill lands mid-drain
        slow = subprocess.Popen(agent_command(db, broker.port, kbps=80), env=child_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(slow)
        assert rx.wait_for(lambda r: len(r.alerts()) >= N_ALERTS // 3, 30)
        slow.send_signal(signal.SIGKILL)
        slow.wait(10)
        at_kill = len(rx.alerts())
        assert at_kill < N_ALERTS  # really mid-drain
        # the broker publishes the last will: retained status goes offline
        assert rx.wait_for(lambda r: any(m.topic.endswith("/status") and not json.loads(m.payload)["online"]
                                         for m in r.snapshot()), 5)
        fast = subprocess.Popen(agent_command(db, broker.port, kbps=5000), env=child_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(fast)
        assert rx.wait_for(lambda r: len({a["id"] for a in r.alerts()}) == N_ALERTS, 30)
        time.sleep(0.5)
        fast.send_signal(signal.SIGTERM)
        assert fast.wait(15) == 0
        counts = Counter(a["id"] for a in rx.alerts())
        assert set(counts) == {f"EVT{i:05d}" for i in range(N_ALERTS)}
        duplicates = sum(n - 1 for n in counts.values())
        print(f"kill -9 after {at_kill}/{N_ALERTS} alerts; duplicates after restart: {duplicates}")
        assert duplicates <= WINDOW
        box = Outbox(db, device_id=DEVICE)
        assert box.stats()["depth_total"] == 0
        box.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        rx.stop()
        broker.stop()


def test_child_agent_helper_exists():
    """The child agent entry point is runnable (guards the kill test against a broken helper)."""
    out = subprocess.run([sys.executable, agent_command(Path("x"), 1, kbps=1)[1], "--help"],
                         env=child_env(), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--kbps" in out.stdout
    assert os.path.exists(agent_command(Path("x"), 1, kbps=1)[1])
