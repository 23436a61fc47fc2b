"""MANSCDP XML bodies (GB/T 28181 Application/MANSCDP+xml): Keepalive, Catalog, DeviceInfo.

Values are child elements. The body is decoded per its XML declaration (devices send GB2312 or
GB18030 most often; GB2312 is read as its superset GB18030), DOCTYPEs are refused.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from edge_agent.errors import ParseError

MAX_BODY = 256 * 1024
_DECL = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9_.\-]{1,40})[\"'][^>]*\?>")
_DECL_ANY = re.compile(r"^\s*<\?xml[^>]*\?>")
_ALIASES = {"gb2312": "gb18030", "gbk": "gb18030", "gb18030": "gb18030", "utf-8": "utf-8", "utf8": "utf-8"}


@dataclass
class CatalogItem:
    device_id: str
    name: str = ""
    manufacturer: str = ""
    model: str = ""
    parent_id: str = ""
    status: str = ""  # ON / OFF (some devices send ONLINE / OFFLINE)

    @property
    def online(self) -> bool:
        return self.status.upper() in ("ON", "ONLINE", "OK", "")


@dataclass
class ManscdpMessage:
    """A parsed body: `root` is Query/Notify/Response/Control, `cmd_type` e.g. Keepalive."""

    root: str
    cmd_type: str
    sn: int
    device_id: str
    fields: dict[str, str] = field(default_factory=dict)
    sum_num: int | None = None
    items: list[CatalogItem] = field(default_factory=list)


def decode_body(body: bytes) -> str:
    """Decode by the declared encoding; undeclared bodies are UTF-8, else GB18030."""
    if len(body) > MAX_BODY:
        raise ParseError(f"MANSCDP body of {len(body)} bytes exceeds {MAX_BODY}")
    m = _DECL.match(body)
    if m:
        declared = m.group(1).decode("ascii").lower()
        codec = _ALIASES.get(declared)
        if codec is None:
            raise ParseError(f"MANSCDP XML declares unsupported encoding {declared!r}")
        try:
            return body.decode(codec)
        except UnicodeDecodeError as err:
            raise ParseError(f"MANSCDP body is not valid {declared} at byte {err.start}") from err
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return body.decode("gb18030")
        except UnicodeDecodeError as err:
            raise ParseError(f"MANSCDP body is neither UTF-8 nor GB18030 (byte {err.start})") from err


def _int(text: str, what: str) -> int:
    t = text.strip()
    if not t.isdigit() or len(t) > 9:
        raise ParseError(f"MANSCDP <{what}> {t[:20]!r} is not a number")
    return int(t)


def parse_manscdp(body: bytes) -> ManscdpMessage:
    text = decode_body(body)
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ParseError("MANSCDP body contains a DOCTYPE/ENTITY, refused")
    text = _DECL_ANY.sub("", text, count=1)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise ParseError(f"MANSCDP XML is malformed: {err}") from err
    if root.tag not in ("Query", "Notify", "Response", "Control"):
        raise ParseError(f"MANSCDP root element <{root.tag[:30]}> is not Query/Notify/Response/Control")
    fields = {child.tag: (child.text or "").strip() for child in root if len(child) == 0}
    cmd = fields.get("CmdType", "")
    if not cmd:
        raise ParseError(f"MANSCDP <{root.tag}> lacks <CmdType>")
    if "SN" not in fields:
        raise ParseError(f"MANSCDP <{root.tag}> {cmd} lacks <SN>")
    device_id = fields.get("DeviceID", "")
    if not device_id:
        raise ParseError(f"MANSCDP <{root.tag}> {cmd} lacks <DeviceID>")
    msg = ManscdpMessage(root=root.tag, cmd_type=cmd, sn=_int(fields["SN"], "SN"), device_id=device_id, fields=fields)
    if root.tag == "Response" and cmd == "Catalog":
        msg.sum_num = _int(fields.get("SumNum", "0"), "SumNum")
        dl = root.find("DeviceList")
        if dl is not None:
            for item in dl.findall("Item"):
                vals = {c.tag: (c.text or "").strip() for c in item}
                if not vals.get("DeviceID"):
                    raise ParseError(f"MANSCDP Catalog SN {msg.sn}: an <Item> lacks <DeviceID>")
                msg.items.append(CatalogItem(
                    device_id=vals["DeviceID"], name=vals.get("Name", ""), manufacturer=vals.get("Manufacturer", ""),
                    model=vals.get("Model", ""), parent_id=vals.get("ParentID", ""), status=vals.get("Status", "")))
            num = dl.get("Num")
            if num is not None and _int(num, "DeviceList Num") != len(msg.items):
                raise ParseError(f"MANSCDP Catalog SN {msg.sn}: DeviceList Num={num} but {len(msg.items)} <Item>s")
    return msg


# --- builders ------------------------------------------------------------------------------

def _xml(root: str, children: list[tuple[str, str]], extra: str = "", encoding: str = "GB2312") -> bytes:
    parts = [f'<?xml version="1.0" encoding="{encoding}"?>', f"<{root}>"]
    for k, v in children:
        v = v.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        parts.append(f"<{k}>{v}</{k}>")
    if extra:
        parts.append(extra)
    parts.append(f"</{root}>")
    codec = _ALIASES.get(encoding.lower(), "utf-8")
    return ("\r\n".join(parts) + "\r\n").encode(codec)


def build_query(cmd_type: str, sn: int, device_id: str) -> bytes:
    return _xml("Query", [("CmdType", cmd_type), ("SN", str(sn)), ("DeviceID", device_id)])


def build_keepalive(sn: int, device_id: str, encoding: str = "GB2312") -> bytes:
    return _xml("Notify", [("CmdType", "Keepalive"), ("SN", str(sn)), ("DeviceID", device_id), ("Status", "OK")],
                encoding=encoding)


def build_catalog_response(sn: int, device_id: str, sum_num: int, items: list[CatalogItem],
                           encoding: str = "GB2312") -> bytes:
    def esc(v: str) -> str:
        return v.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    rows = "".join(
        f"<Item><DeviceID>{esc(i.device_id)}</DeviceID><Name>{esc(i.name)}</Name>"
        f"<Manufacturer>{esc(i.manufacturer)}</Manufacturer><Model>{esc(i.model)}</Model>"
        f"<ParentID>{esc(i.parent_id)}</ParentID><Status>{esc(i.status or 'ON')}</Status></Item>"
        for i in items)
    extra = f'<DeviceList Num="{len(items)}">{rows}</DeviceList>'
    return _xml("Response", [("CmdType", "Catalog"), ("SN", str(sn)), ("DeviceID", device_id),
                             ("SumNum", str(sum_num))], extra, encoding)


def build_device_info(sn: int, device_id: str, name: str, manufacturer: str, model: str, firmware: str) -> bytes:
    return _xml("Response", [("CmdType", "DeviceInfo"), ("SN", str(sn)), ("DeviceID", device_id),
                             ("DeviceName", name), ("Result", "OK"), ("Manufacturer", manufacturer),
                             ("Model", model), ("Firmware", firmware)])
