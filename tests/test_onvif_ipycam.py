"""ONVIF against a real peer: ipycam (virtual ONVIF camera with WS-Discovery, WS-UsernameToken auth and
its own RTSP server), all inside a private network namespace so multicast never leaves it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from support.netns import call_in_netns
from support.onvif_scenario import BASE_CONFIG, MAIN_SIZE, ONVIF_PORT, PASSWORD, PASSWORD_ENV, SUB_SIZE, USER

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> dict:
    work: Path = tmp_path_factory.mktemp("onvif")
    return call_in_netns("tests.support.onvif_scenario:run", timeout=240, workdir=str(work))


def test_multicast_probe_finds_ipycam(scenario):
    """A multicast WS-Discovery Probe inside the netns finds exactly the ipycam device and its name."""
    assert len(scenario["probe"]) == 1
    found = scenario["probe"][0]
    assert found["endpoint"].startswith("urn:uuid:")
    assert found["xaddrs"] == [f"http://127.0.0.1:{ONVIF_PORT}/onvif/device_service"]
    assert found["name"] == "Kitchen Cam"


def test_profiles_and_stream_uris(scenario):
    """With the right credentials we get both profiles, main = highest resolution, sub = the 320-wide one."""
    dev = scenario["device"]
    assert dev["model"] == "VirtualCam-1"
    assert sorted(map(tuple, dev["profiles"])) == [("Profile_Main", *MAIN_SIZE), ("Profile_Sub", *SUB_SIZE)]
    assert dev["main"][:2] == ["Profile_Main", "rtsp://127.0.0.1:18554/video_main"]
    assert dev["main"][2].endswith("/snapshot.jpg")
    assert dev["sub"] == ["Profile_Sub", "rtsp://127.0.0.1:18554/video_sub"]
    assert abs(dev["clock_offset_s"]) < 5


def test_wrong_password_is_auth_failed(scenario):
    """ipycam refuses a wrong digest (HTTP 401 + fault); the client raises AuthFailed from the library error."""
    wrong = scenario["wrong_password"]
    assert wrong["is_auth_failed"], wrong
    assert "auth failed" in wrong["message"]
    assert wrong["cause"] == "Fault"
    cli = scenario["cli_wrong_password"]
    assert cli["rc"] == 1
    assert "认证失败 (auth failed)" in cli["stderr"]
    assert cli["config_unchanged"]
    assert "wrong-password" not in cli["stderr"]


def test_discover_needs_confirmation(scenario):
    """Without --yes and without a terminal, discover shows the plan but does not write."""
    cli = scenario["cli_without_yes"]
    assert cli["rc"] == 3 and cli["unchanged"]
    assert "--yes" in cli["stderr"]


def test_discover_yes_writes_valid_config(scenario):
    """`edge-agent discover --yes --config X` adds the camera, keeps the hand-made one and the comments,
    writes a .bak and never writes the password."""
    first = scenario["cli_first"]
    assert first["rc"] == 0, first["stderr"]
    assert "Kitchen Cam" in first["stdout"] and "640x360 rtsp://127.0.0.1:18554/video_main" in first["stdout"]
    assert "组播搜索" in first["stderr"]
    text = scenario["config_after_first"]
    assert text.startswith(BASE_CONFIG.splitlines()[0])
    assert "status_port: 0   # trailing comment kept" in text
    assert PASSWORD not in text and PASSWORD not in first["stdout"] + first["stderr"]
    cams = {c["id"]: c for c in yaml.safe_load(text)["cameras"]}
    assert cams["hand-made"]["source"]["url"] == "rtsp://127.0.0.1:9554/hand"
    src = cams[f"onvif-127-0-0-1-{ONVIF_PORT}"]["source"]
    assert src == {"type": "rtsp", "url": "rtsp://127.0.0.1:18554/video_main", "sub_url": "rtsp://127.0.0.1:18554/video_sub",
                   "transport": "tcp", "username": USER, "password_env": PASSWORD_ENV, "onvif_host": f"127.0.0.1:{ONVIF_PORT}"}
    assert scenario["backup_is_original"]


def test_written_config_passes_config_check(scenario):
    """`edge-agent config check` itself (no fallback) accepts the written config: exit 0, both cameras counted,
    no warning about the camera's password (it is in the environment, as at run time)."""
    check = scenario["config_check"]
    assert check["rc"] == 0 and check["ok"], check
    assert ": OK — device 64050200001180000001, 2 camera(s)" in check["stdout"], check
    assert "cameras[" not in check["stderr"], check


def test_second_discover_changes_nothing(scenario):
    """Running discover again finds the same camera by onvif_host and leaves the file as it is."""
    assert scenario["cli_second"]["rc"] == 0
    assert "配置无变化" in scenario["cli_second"]["stderr"]
    assert scenario["config_after_second"] == scenario["config_after_first"]


def test_unicast_address_finds_ipycam(scenario):
    """`discover --address` probes the camera by unicast and prints it without touching any config."""
    uni = scenario["cli_unicast"]
    assert uni["rc"] == 0, uni["stderr"]
    assert "单播探测 127.0.0.1:3702" in uni["stderr"] and "未应答" not in uni["stderr"]
    assert "Kitchen Cam" in uni["stdout"] and "320x180 rtsp://127.0.0.1:18554/video_sub" in uni["stdout"]


@pytest.mark.parametrize(("key", "size"), [("stream_main", MAIN_SIZE), ("stream_sub", SUB_SIZE)])
def test_pyav_decodes_written_streams(scenario, key, size):
    """PyAV opens the URIs written to the config and decodes >= 10 frames of the profile's size."""
    stream = scenario[key]
    assert stream["frames"] >= 10
    assert stream["sizes"] == [list(size)]
