"""WS-Discovery: build a Probe, parse ProbeMatches (pure), and send probes over UDP (I/O).

Multicast goes to 239.255.255.250:3702; devices answer by unicast to the socket that sent the
probe. A unicast probe to a known address finds cameras on networks where multicast is blocked.
"""

from __future__ import annotations

import select
import socket
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import replace
from urllib.parse import unquote

import structlog

from edge_agent.errors import ParseError
from edge_agent.onvif.types import ProbeMatch, Scopes

log = structlog.get_logger(__name__)

MULTICAST_GROUP = "239.255.255.250"
DISCOVERY_PORT = 3702
NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
NS_DN = "http://www.onvif.org/ver10/network/wsdl"
ONVIF_SCOPE = "onvif://www.onvif.org/"
MAX_DATAGRAM = 65535


def build_probe(message_id: str | None = None, types: str = "dn:NetworkVideoTransmitter") -> tuple[str, bytes]:
    """Return (message id, SOAP 1.2 Probe envelope) asking for ONVIF video transmitters."""
    mid = message_id or f"urn:uuid:{uuid.uuid4()}"
    envelope = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{NS_SOAP}" xmlns:a="{NS_WSA}" xmlns:d="{NS_WSD}" xmlns:dn="{NS_DN}">'
        "<s:Header>"
        f"<a:Action>{NS_WSD}/Probe</a:Action>"
        f"<a:MessageID>{mid}</a:MessageID>"
        "<a:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>"
        "</s:Header>"
        f"<s:Body><d:Probe><d:Types>{types}</d:Types></d:Probe></s:Body>"
        "</s:Envelope>"
    )
    return mid, envelope.encode("utf-8")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(elem: ET.Element, name: str) -> str:
    for child in elem.iter():
        if _local(child.tag) == name and child.text:
            return child.text.strip()
    return ""


def split_scopes(text: str) -> list[str]:
    """Split a whitespace-separated scope list.

    Some devices put unescaped spaces into scope values ("…/name/Kitchen Cam"); a piece that
    is not itself a URI is glued back onto the scope before it.
    """
    out: list[str] = []
    for piece in text.split():
        if "://" in piece or ":" in piece.split("/", 1)[0] or not out:
            out.append(piece)
        else:
            out[-1] = f"{out[-1]} {piece}"
    return out


def decode_scopes(scopes: Iterable[str]) -> Scopes:
    """Pick name, hardware, location and ONVIF profiles out of `onvif://www.onvif.org/...` scopes."""
    raw = tuple(scopes)
    name = hardware = ""
    locations: list[str] = []
    profiles: list[str] = []
    for scope in raw:
        if not scope.lower().startswith(ONVIF_SCOPE):
            continue
        kind, _, value = scope[len(ONVIF_SCOPE):].partition("/")
        value = unquote(value).strip()
        kind = kind.lower()
        if kind == "name" and not name:
            name = value
        elif kind == "hardware" and not hardware:
            hardware = value
        elif kind == "location" and value:
            locations.append(value)
        elif kind == "profile" and value:
            profiles.append(value)
    return Scopes(name=name, hardware=hardware, location=", ".join(locations), profiles=tuple(profiles), raw=raw)


def parse_probe_matches(data: bytes | str, source: str = "datagram") -> list[ProbeMatch]:
    """Parse a ProbeMatches reply into ProbeMatch records; raises ParseError on malformed input.

    Tolerates a bare <ProbeMatch> directly in the Body (without the <ProbeMatches> wrapper),
    as some devices send. A reply without any ProbeMatch returns an empty list.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise ParseError(f"{source}: WS-Discovery reply is not well-formed XML: {err}") from err
    if _local(root.tag) != "Envelope":
        raise ParseError(f"{source}: WS-Discovery reply is not a SOAP envelope (root <{_local(root.tag)}>)")
    matches = []
    for index, elem in enumerate(e for e in root.iter() if _local(e.tag) == "ProbeMatch"):
        endpoint = ""
        for child in elem:
            if _local(child.tag) == "EndpointReference":
                endpoint = _child_text(child, "Address")
        xaddrs = tuple(_child_text(elem, "XAddrs").split())
        if not endpoint:
            raise ParseError(f"{source}: ProbeMatch[{index}] has no EndpointReference/Address")
        if not xaddrs:
            raise ParseError(f"{source}: ProbeMatch[{index}] ({endpoint}) has no XAddrs")
        version_text = _child_text(elem, "MetadataVersion")
        try:
            version = int(version_text) if version_text else None
        except ValueError as err:
            raise ParseError(f"{source}: ProbeMatch[{index}] MetadataVersion {version_text!r} is not an integer") from err
        matches.append(
            ProbeMatch(
                endpoint=endpoint,
                xaddrs=xaddrs,
                scopes=decode_scopes(split_scopes(_child_text(elem, "Scopes"))),
                types=tuple(_child_text(elem, "Types").split()),
                metadata_version=version,
            )
        )
    return matches


def relates_to(data: bytes | str) -> str:
    """The RelatesTo header of a reply ('' if absent or unparsable)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return ""
    return _child_text(root, "RelatesTo")


def merge_matches(matches: Iterable[ProbeMatch]) -> list[ProbeMatch]:
    """Deduplicate by endpoint reference, keeping first-seen order and the union of XAddrs."""
    merged: dict[str, ProbeMatch] = {}
    for m in matches:
        old = merged.get(m.endpoint)
        if old is None:
            merged[m.endpoint] = m
        else:
            xaddrs = old.xaddrs + tuple(x for x in m.xaddrs if x not in old.xaddrs)
            merged[m.endpoint] = replace(old, xaddrs=xaddrs)
    return list(merged.values())


def parse_target(text: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port` or `[v6]:port` -> (host, port); raises ValueError on a bad port."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"address {text!r} has no host")
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise ValueError(f"address {text!r}: port out of range")
    return host, port


def probe(
    timeout: float = 3.0,
    multicast: bool = True,
    unicast: Iterable[tuple[str, int]] = (),
    interface_ip: str | None = None,
    ttl: int = 1,
) -> list[ProbeMatch]:
    """Send one Probe (multicast and/or unicast) and collect ProbeMatches until `timeout` elapses."""
    mid, message = build_probe()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    found: list[ProbeMatch] = []
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        if interface_ip:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface_ip))
        sock.bind((interface_ip or "", 0))
        targets = [(MULTICAST_GROUP, DISCOVERY_PORT)] if multicast else []
        targets += list(unicast)
        for target in targets:
            try:
                sock.sendto(message, target)
            except OSError as err:
                log.warning("onvif.probe.send_failed", target=f"{target[0]}:{target[1]}", error=str(err))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            data, addr = sock.recvfrom(MAX_DATAGRAM)
            related = relates_to(data)
            if related and related != mid:
                continue
            try:
                matches = parse_probe_matches(data, source=f"{addr[0]}:{addr[1]}")
            except ParseError as err:
                log.warning("onvif.probe.bad_reply", responder=addr[0], error=str(err))
                continue
            found.extend(replace(m, responder=addr[0]) for m in matches)
    finally:
        sock.close()
    result = merge_matches(found)
    log.info("onvif.probe.done", message_id=mid, devices=len(result), multicast=multicast)
    return result
