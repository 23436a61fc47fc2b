"""Pure ONVIF parsing: WS-Discovery envelopes, scopes, profiles, profile choice, error translation."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import aiohttp
import pytest
import zeep.exceptions
from onvif.exceptions import ONVIFAuthError, ONVIFError, ONVIFTimeoutError

from edge_agent.errors import AuthFailed, NeedsHuman, ParseError, RetryLater
from edge_agent.onvif.client import (
    choose_main,
    choose_sub,
    parse_device_information,
    parse_profiles,
    service_address,
    strip_credentials,
    translate_error,
)
from edge_agent.onvif.discovery import (
    build_probe,
    decode_scopes,
    merge_matches,
    parse_probe_matches,
    parse_target,
    relates_to,
    split_scopes,
)
from edge_agent.onvif.types import Profile

pytestmark = pytest.mark.unit

HEAD = (
    '<?xml version="1.0"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery">'
    "<s:Header><a:RelatesTo>urn:uuid:1</a:RelatesTo></s:Header><s:Body>"
)
TAIL = "</s:Body></s:Envelope>"


def match(uuid: str, xaddrs: str, scopes: str = "", version: str = "1") -> str:
    return (
        f"<d:ProbeMatch><a:EndpointReference><a:Address>{uuid}</a:Address></a:EndpointReference>"
        f"<d:Types>dn:NetworkVideoTransmitter</d:Types><d:Scopes>{scopes}</d:Scopes>"
        f"<d:XAddrs>{xaddrs}</d:XAddrs><d:MetadataVersion>{version}</d:MetadataVersion></d:ProbeMatch>"
    )


def test_probe_envelope_is_soap12_probe_for_video_transmitters():
    """The Probe is well-formed SOAP 1.2 with our MessageID and the NetworkVideoTransmitter type."""
    mid, data = build_probe("urn:uuid:abc")
    root = ET.fromstring(data)
    assert mid == "urn:uuid:abc"
    assert root.tag == "{http://www.w3.org/2003/05/soap-envelope}Envelope"
    assert root.findtext(".//{http://schemas.xmlsoap.org/ws/2004/08/addressing}MessageID") == "urn:uuid:abc"
    assert root.findtext(".//{http://schemas.xmlsoap.org/ws/2005/04/discovery}Types") == "dn:NetworkVideoTransmitter"
    assert build_probe()[0] != build_probe()[0]


def test_probe_matches_with_several_matches():
    """All ProbeMatch elements are returned with endpoint, XAddrs, scopes and version."""
    xml = HEAD + "<d:ProbeMatches>" + match(
        "urn:uuid:cam-1", "http://192.0.2.10/onvif/device_service http://[fe80::1]/onvif/device_service",
        "onvif://www.onvif.org/name/Stove%20Left onvif://www.onvif.org/hardware/DS-2CD onvif://www.onvif.org/Profile/Streaming",
    ) + match("urn:uuid:cam-2", "http://192.0.2.11:8000/onvif/device_service", version="7") + "</d:ProbeMatches>" + TAIL
    found = parse_probe_matches(xml)
    assert [m.endpoint for m in found] == ["urn:uuid:cam-1", "urn:uuid:cam-2"]
    assert found[0].xaddrs == ("http://192.0.2.10/onvif/device_service", "http://[fe80::1]/onvif/device_service")
    assert found[0].scopes.name == "Stove Left"
    assert found[0].scopes.hardware == "DS-2CD"
    assert found[0].scopes.profiles == ("Streaming",)
    assert found[1].metadata_version == 7
    assert found[1].device_service == "http://192.0.2.11:8000/onvif/device_service"
    assert relates_to(xml) == "urn:uuid:1"


def test_bare_probe_match_without_wrapper_is_accepted():
    """A <ProbeMatch> directly in the Body (as ipycam sends it) is parsed too."""
    found = parse_probe_matches(HEAD + match("urn:uuid:x", "http://127.0.0.1:8080/onvif/device_service") + TAIL)
    assert len(found) == 1 and found[0].endpoint == "urn:uuid:x"


def test_ipv6_xaddr_is_not_preferred():
    """device_service prefers an IPv4/host-name XAddr over a bracketed IPv6 one."""
    found = parse_probe_matches(HEAD + match("urn:uuid:x", "http://[fe80::1]/d http://10.0.0.5/d") + TAIL)
    assert found[0].device_service == "http://10.0.0.5/d"


@pytest.mark.parametrize(
    ("scopes", "name", "hardware", "location"),
    [
        ("onvif://www.onvif.org/name/%E5%90%8E%E5%8E%A8 onvif://www.onvif.org/location/city/zhongwei",
         "后厨", "", "city/zhongwei"),
        ("onvif://www.onvif.org/name/Kitchen Cam onvif://www.onvif.org/type/video_encoder", "Kitchen Cam", "", ""),
        ("onvif://www.onvif.org/location/country/china onvif://www.onvif.org/location/building/2 "
         "ONVIF://www.onvif.org/Hardware/IPC-1", "", "IPC-1", "country/china, building/2"),
        ("urn:vendor:thing http://example.invalid/x", "", "", ""),
        ("", "", "", ""),
    ],
)
def test_scopes_decoding(scopes, name, hardware, location):
    """Scopes give URL-decoded name, hardware and joined locations; unescaped spaces are tolerated."""
    s = decode_scopes(split_scopes(scopes))
    assert (s.name, s.hardware, s.location) == (name, hardware, location)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"<s:Envelope><unclosed>", "not well-formed"),
        (b"", "not well-formed"),
        (b"<html><body>hello</body></html>", "not a SOAP envelope"),
        ((HEAD + match("", "http://h/d") + TAIL).encode(), "no EndpointReference"),
        ((HEAD + match("urn:uuid:y", "") + TAIL).encode(), "no XAddrs"),
        ((HEAD + match("urn:uuid:y", "http://h/d", version="x") + TAIL).encode(), "not an integer"),
    ],
)
def test_malformed_replies_raise_clear_parse_error(data, words):
    """Malformed WS-Discovery replies raise ParseError naming the source and the problem."""
    with pytest.raises(ParseError, match=words) as info:
        parse_probe_matches(data, source="192.0.2.9:3702")
    assert "192.0.2.9:3702" in str(info.value)


def test_reply_without_matches_is_empty():
    """A well-formed envelope without any ProbeMatch yields no devices."""
    assert parse_probe_matches(HEAD + TAIL) == []


def test_merge_dedupes_by_endpoint_and_unions_xaddrs():
    """The same endpoint answering twice (multicast + unicast) is one device with both XAddrs."""
    a = parse_probe_matches(HEAD + match("urn:uuid:1", "http://a/d") + match("urn:uuid:2", "http://c/d") + TAIL)
    b = parse_probe_matches(HEAD + match("urn:uuid:1", "http://a/d http://b/d") + TAIL)
    merged = merge_matches(a + b)
    assert [m.endpoint for m in merged] == ["urn:uuid:1", "urn:uuid:2"]
    assert merged[0].xaddrs == ("http://a/d", "http://b/d")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("192.0.2.1", ("192.0.2.1", 80)), ("192.0.2.1:8000", ("192.0.2.1", 8000)), ("[fe80::1]:81", ("fe80::1", 81)),
     ("cam.local", ("cam.local", 80))],
)
def test_parse_target(text, expected):
    """HOST[:PORT] parses with the default port."""
    assert parse_target(text, 80) == expected


@pytest.mark.parametrize("bad", ["", ":80", "h:0", "h:70000", "h:x"])
def test_parse_target_rejects_bad(bad):
    """Bad addresses raise ValueError."""
    with pytest.raises(ValueError):
        parse_target(bad, 80)


RAW_PROFILES = [
    {"token": "main", "Name": "MainStream",
     "VideoEncoderConfiguration": {"Encoding": "H264", "Resolution": {"Width": 2560, "Height": 1440},
                                   "RateControl": {"FrameRateLimit": 25}}},
    {"token": "audio", "Name": "AudioOnly", "VideoEncoderConfiguration": None},
    {"token": "qcif", "Name": "Tiny", "VideoEncoderConfiguration": {"Encoding": "H264", "Resolution": {"Width": 176, "Height": 144}}},
    {"token": "sub", "Name": "SubStream", "VideoEncoderConfiguration": {"Encoding": "H265", "Resolution": {"Width": 640, "Height": 360}}},
    {"token": "third", "Name": "Third", "VideoEncoderConfiguration": {"Encoding": "H264", "Resolution": {"Width": 1280, "Height": 720}}},
]


def test_parse_profiles_skips_profiles_without_video():
    """Profiles become dataclasses; the audio-only one is dropped."""
    profiles = parse_profiles(RAW_PROFILES)
    assert [p.token for p in profiles] == ["main", "qcif", "sub", "third"]
    assert profiles[0] == Profile("main", "MainStream", "H264", 2560, 1440, 25.0)


def test_choose_main_highest_and_sub_lowest_at_least_320_wide():
    """Main = highest resolution; sub = lowest resolution that is >= 320 wide (QCIF is too small)."""
    profiles = parse_profiles(RAW_PROFILES)
    assert choose_main(profiles).token == "main"
    assert choose_sub(profiles).token == "sub"
    assert choose_sub(profiles, min_width=1000).token == "third"
    assert choose_sub([Profile("q", "q", "H264", 176, 144)]) is None
    assert choose_main([]) is None


def test_device_information_and_addresses():
    """Device information, credential stripping and service address parsing."""
    info = parse_device_information({"Manufacturer": "HIK", "Model": "DS-2CD", "SerialNumber": "S1"})
    assert (info.manufacturer, info.model, info.serial, info.firmware) == ("HIK", "DS-2CD", "S1", "")
    assert strip_credentials("rtsp://admin:p%40ss@192.0.2.3:554/Streaming/101") == "rtsp://192.0.2.3:554/Streaming/101"
    assert strip_credentials("rtsp://192.0.2.3/live") == "rtsp://192.0.2.3/live"
    assert service_address("http://192.0.2.3/onvif/device_service") == ("192.0.2.3", 80)
    assert service_address("https://cam:8443/onvif/device_service") == ("cam", 8443)


def _raised_from(inner: BaseException, outer: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as err:
            raise outer from err
    except BaseException as err:
        return err


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (zeep.exceptions.Fault("Sender not authorized", code="s:Receiver"), AuthFailed),
        (zeep.exceptions.Fault("denied", code="s:Sender", subcodes=["ter:NotAuthorized"]), AuthFailed),
        (zeep.exceptions.TransportError(status_code=401), AuthFailed),
        (ONVIFAuthError("Failed to authenticate"), AuthFailed),
        (_raised_from(zeep.exceptions.TransportError(status_code=401), ONVIFError("wrapped")), AuthFailed),
        (TimeoutError(), RetryLater),
        (ONVIFTimeoutError("slow"), RetryLater),
        (aiohttp.ClientConnectionError("refused"), RetryLater),
        (ConnectionRefusedError(111, "refused"), RetryLater),
        (zeep.exceptions.TransportError(status_code=503), RetryLater),
        (zeep.exceptions.Fault("Action not supported", code="s:Receiver", subcodes=["ter:ActionNotSupported"]), NeedsHuman),
    ],
)
def test_translate_error(err, kind):
    """Library errors map to AuthFailed (refused credentials), RetryLater (unreachable) or NeedsHuman."""
    out = translate_error(err, "192.0.2.5:80")
    assert type(out) is kind
    assert "192.0.2.5:80" in str(out)
    if kind is AuthFailed:
        assert "auth failed" in str(out)
