"""Remote configuration end to end: the API pushes a config to a real `edge-agent run` process (restarted
on exit code 75 as systemd's Restart=always would); a config whose camera never starts is rolled back
and reported in the box's status; an invalid one is refused naming the line and key; a good one is kept."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support.command_api import CommandApi
from support.footage import clip_1080p
from support.receiver_harness import receiver_config, receiver_with_box
from support.uplink_broker import child_env
from support.waiting import async_wait_until

from cloud_receiver.admin import auth
from cloud_receiver.appkeys import STORAGE
from devkit.localbroker import running_broker
from edge_agent.app.config_push import EXIT_RESTART

pytestmark = pytest.mark.system

DEV = "64050200001180000001"


def agent_yaml(tmp: Path, port: int, camera_url: str, name: str = "后厨") -> str:
    return f"""device:
  id: "{DEV}"
  config_trial_s: 6
storage: {{path: {tmp}/agent.db}}
detector: {{choose_variant: false}}
recording: {{enabled: false}}
uplink:
  broker: {{host: 127.0.0.1, port: {port}, password_env: BK_TEST_DEVICE_PASSWORD}}
cameras:
  - id: cam1
    name: {name}
    source: {{type: file, url: {camera_url}}}
"""


class MiniSystemd:
    """Runs `edge-agent run -c FILE` and starts it again after exit code 75, as Restart=always does."""

    def __init__(self, config: Path) -> None:
        self.config, self.exits = config, []
        self.proc: subprocess.Popen | None = None
        self.stopping = False
        env = child_env() | {"BK_TEST_DEVICE_PASSWORD": ""}
        self.argv, self.env = [str(Path(sys.executable).with_name("edge-agent")), "run", "-c", str(config)], env
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopping:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.exits.append(self.proc.wait())
            if self.exits[-1] != EXIT_RESTART:
                return

    def __enter__(self) -> MiniSystemd:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
        self.thread.join(20)


async def test_push_roll_back_refuse_and_keep(tmp_path):
    """Bad camera → rolled back and reported; invalid YAML → refused naming the key; good → kept, version shown."""
    good_clip = str(clip_1080p("carphone_pristine.mp4"))
    with running_broker(tmp_path / "broker") as broker:
        config = tmp_path / "agent.yaml"
        original = agent_yaml(tmp_path, broker.port, good_clip)
        config.write_text(original, encoding="utf-8")
        async with receiver_with_box(receiver_config(tmp_path, broker), DEV) as client:
            storage = client.app[STORAGE]
            box = CommandApi(client, auth.create_token(storage.sql, "admin", "", "ops"), DEV)

            async def command(body: dict) -> dict:
                """Send (retrying while the box is not connected) and wait for the box's answer."""
                return await box.run(body, done=lambda v: v["state"] in ("ok", "failed"), timeout=40)

            def status_problems() -> list[str]:
                row = storage.sql.rows("SELECT status_json FROM devices WHERE id = :id", id=DEV)[0]
                return json.loads(row["status_json"] or "{}").get("problems", [])

            with MiniSystemd(config) as systemd:
                first = await command({"name": "status"})
                assert first["state"] == "ok" and first["data"]["config_version"] == ""

                broken = agent_yaml(tmp_path, broker.port, str(tmp_path / "no-such-camera.mp4"))
                pushed = await command({"name": "config_push", "args": {"config": broken, "version": "v2"}})
                assert pushed["state"] == "ok" and pushed["data"]["applied"] == "restarting"
                assert await async_wait_until(lambda: any("config v2 rolled back" in p for p in status_problems()), 60,
                                              step=0.3), status_problems()
                pushed_file = tmp_path / "agent.pushed.yaml"  # beside the outbox: /etc is never written
                assert config.read_text(encoding="utf-8") == original and pushed_file.read_text() == original
                assert systemd.exits[:2] == [EXIT_RESTART, EXIT_RESTART]  # pushed, then rolled back

                invalid = original.replace("type: file", "type: fax")
                refused = await command({"name": "config_push", "args": {"config": invalid, "version": "v3"}})
                assert refused["state"] == "failed" and "cameras[0].source.type" in refused["error"]

                renamed = agent_yaml(tmp_path, broker.port, good_clip, name="新后厨")
                kept = await command({"name": "config_push", "args": {"config": renamed, "version": "v4"}})
                assert kept["state"] == "ok"
                after: list = []

                async def kept_v4() -> bool:
                    after.append(await command({"name": "status"}))
                    return after[-1]["data"]["config_version"] == "v4" and not after[-1]["data"]["config_on_trial"]
                assert await async_wait_until(kept_v4, 60, step=1), after[-1]
                assert pushed_file.read_text(encoding="utf-8") == renamed and config.read_text() == original
                assert await async_wait_until(lambda: status_problems() == [], 20, step=0.3), status_problems()
