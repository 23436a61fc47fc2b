"""GB/T 28181 REGISTER with digest auth and a keepalive MESSAGE from a real SIP peer (sipp)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from support.gb_device_emulator import DEVICE, gb_config

from devkit.localbroker import free_port
from edge_agent.capture.gb28181 import GbEvent, GbSipServer

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data" / "gb"
SERVER_ID = "64050200002000000001"


async def run_sipp(port: int, scenario: str, password: str, workdir: Path) -> tuple[int, str, str]:
    sipp = shutil.which("sipp")
    assert sipp, "sipp is missing: apt-get install -y sip-tester"
    msgs = workdir / "sipp_messages.log"
    proc = await asyncio.create_subprocess_exec(
        sipp, f"127.0.0.1:{port}", "-sf", str(DATA / scenario), "-oocsf", str(DATA / "sipp_out_of_call.xml"),
        "-m", "1", "-i", "127.0.0.1", "-p", str(free_port(udp_too=True)), "-au", DEVICE, "-ap", password,
        "-key", "device_id", DEVICE, "-key", "server_id", SERVER_ID, "-key", "realm", "6405020000",
        "-nostdin", "-timeout", "10s", "-timeout_error", "-trace_msg", "-message_file", str(msgs),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=str(workdir))
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(errors="replace"), msgs.read_text(errors="replace")


async def test_sipp_registers_with_digest_and_keepalive(tmp_path, monkeypatch):
    """sipp answers the 401 with digest, gets 200 with Date, and its keepalive MESSAGE gets 200."""
    monkeypatch.setenv("BK_TEST_GB_DEV_PW", "dev-secret")
    events: list[GbEvent] = []
    server = GbSipServer(gb_config(keepalive_timeout_s=30), on_event=events.append)
    await server.start()
    try:
        rc, out, trace = await run_sipp(server.port, "sipp_register_keepalive.xml", "dev-secret", tmp_path)
        assert rc == 0, out[-2000:]
        assert "SIP/2.0 401 Unauthorized" in trace and "Authorization: Digest" in trace
        assert trace.count("SIP/2.0 200 OK") >= 2
        dev = server.devices()[DEVICE]
        assert dev.online and dev.transport == "udp"
        assert dev.last_seen > dev.registered_at  # the keepalive was counted
        assert [e.kind for e in events][:1] == ["device_online"]
    finally:
        await server.stop()


async def test_sipp_wrong_password_gets_403(tmp_path, monkeypatch):
    """A wrong digest password gets 403 Forbidden and no registration."""
    monkeypatch.setenv("BK_TEST_GB_DEV_PW", "dev-secret")
    events: list[GbEvent] = []
    server = GbSipServer(gb_config(), on_event=events.append)
    await server.start()
    try:
        rc, out, trace = await run_sipp(server.port, "sipp_register_wrong_password.xml", "not-the-password", tmp_path)
        assert rc == 0, out[-2000:]
        assert "SIP/2.0 403 Forbidden" in trace
        assert DEVICE not in server.devices()
        assert server.channels() == []
        assert [e.kind for e in events] == ["registration_rejected"]
    finally:
        await server.stop()
