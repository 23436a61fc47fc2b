"""ONVIF client against a FAKE SOAP peer (tests/onvif_fake_peer.py) for what ipycam cannot show:
a camera clock 3 h off, NotAuthorized faults, a bare HTTP 401, a silent camera, a closed port."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta

import pytest
from onvif import ONVIFCamera

from edge_agent.errors import AuthFailed, RetryLater
from edge_agent.onvif.client import fetch_device

pytestmark = pytest.mark.integration

try:
    from support.onvif_fake_peer import FakeOnvifPeer
except ImportError:
    from support.onvif_fake_peer import FakeOnvifPeer

SKEW = timedelta(hours=3)


def test_skewed_clock_is_compensated():
    """GetSystemDateAndTime comes first; digests are stamped with the camera's time, so a 3 h skew still works."""
    with FakeOnvifPeer("admin", "pw", skew=SKEW) as peer:
        dev = asyncio.run(fetch_device("127.0.0.1", peer.port, "admin", "pw", timeout=10))
    assert peer.requests[0] == "GetSystemDateAndTime"
    assert peer.rejected_created == []
    assert abs(dev.clock_offset_s - SKEW.total_seconds()) < 5
    assert (dev.info.manufacturer, dev.info.model) == ("FakeCam", "Skewed-1")
    assert (dev.main.profile.token, dev.sub.profile.token) == ("hd", "sd")  # 176x144 is too small for detection
    assert dev.main.uri == "rtsp://127.0.0.1:9554/fake"  # the credentials the camera put in the URI are stripped


def test_fake_peer_really_rejects_unadjusted_clock():
    """Control: without the clock adjustment the same peer refuses the digest (so the test above means something)."""

    async def unadjusted(port: int) -> None:
        cam = ONVIFCamera("127.0.0.1", port, "admin", "pw", adjust_time=False, no_cache=True)
        try:
            await cam.update_xaddrs()
        finally:
            await cam.close()

    with FakeOnvifPeer("admin", "pw", skew=SKEW) as peer, pytest.raises(Exception, match="(?i)not authorized"):
        asyncio.run(unadjusted(peer.port))
    assert peer.rejected_created


@pytest.mark.parametrize(
    ("mode", "password"), [("ok", "wrong"), ("fault", "pw"), ("bare401", "pw")],
)
def test_refused_credentials_are_auth_failed(mode, password):
    """A NotAuthorized fault and a bare HTTP 401 both become AuthFailed, raised from the library error."""
    with FakeOnvifPeer("admin", "pw", mode=mode) as peer, pytest.raises(AuthFailed, match="auth failed") as info:
        asyncio.run(fetch_device("127.0.0.1", peer.port, "admin", password, timeout=10))
    assert info.value.__cause__ is not None
    assert password not in str(info.value)


def test_silent_camera_is_retry_later():
    """A camera that accepts the connection but never answers times out as RetryLater."""
    with FakeOnvifPeer("admin", "pw", mode="silent") as peer, pytest.raises(RetryLater, match="timed out"):
        asyncio.run(fetch_device("127.0.0.1", peer.port, "admin", "pw", timeout=1.0))


def test_closed_port_is_retry_later():
    """Nothing listening on the port: RetryLater naming the address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RetryLater, match=f"127.0.0.1:{port}"):
        asyncio.run(fetch_device("127.0.0.1", port, "admin", "pw", timeout=5))


def test_discover_address_falls_back_to_direct_onvif(tmp_path, monkeypatch):
    """`discover --address` on a camera without WS-Discovery asks it directly and writes it (loopback only)."""
    import argparse
    import io

    from edge_agent.config import load_config
    from edge_agent.onvif.command import register

    config = tmp_path / "agent.yaml"
    config.write_text('device:\n  id: "64050200001180000001"\ncameras: []\n', encoding="utf-8")
    monkeypatch.setenv("BK_FAKE_CAM_PW", "pw")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    out, err = io.StringIO(), io.StringIO()
    with FakeOnvifPeer("admin", "pw", skew=SKEW) as peer:
        args = parser.parse_args(["discover", "--address", f"127.0.0.1:{peer.port}", "--timeout", "0.3",
                                  "--username", "admin", "--password-env", "BK_FAKE_CAM_PW", "--config", str(config), "--yes"])
        rc = args.func(args, out=out, err=err)
    assert rc == 0, err.getvalue()
    assert "未应答 WS-Discovery" in err.getvalue()
    (cam,) = load_config(config).cameras
    assert cam.source.onvif_host == f"127.0.0.1:{peer.port}"
    assert (cam.source.url, cam.source.username, cam.source.password_env) == ("rtsp://127.0.0.1:9554/fake", "admin", "BK_FAKE_CAM_PW")
    assert "pw" not in config.read_text("utf-8").replace("password_env", "")
