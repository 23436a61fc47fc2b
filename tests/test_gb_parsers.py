"""Unit tests of the GB/T 28181 parsers on tiny inputs."""

from __future__ import annotations

import struct

import pytest

from edge_agent.capture.gb28181 import digest, manscdp, ps, psmux, rtp, sdp, sip
from edge_agent.capture.gb28181.framing import TcpRtpDeframer, frame_4571, frame_interleaved
from edge_agent.errors import ParseError

pytestmark = pytest.mark.unit

REG = (b"REGISTER sip:64050200002000000001@6405020000 SIP/2.0\r\n"
       b"v: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.3;branch=z9hG4bK2\r\n"
       b"Via: SIP/2.0/TCP 10.0.0.4;branch=z9hG4bK3\r\n"
       b"f: <sip:64050200001180000001@6405020000>;tag=abc\r\n"
       b"t: <sip:64050200001180000001@6405020000>\r\n"
       b"i: call-1\r\nCSeq: 1 REGISTER\r\nm: <sip:64050200001180000001@10.0.0.2:5060>\r\n"
       b"Subject: a,\r\n b\r\nc: text/plain\r\nl: 5\r\n\r\nhello-extra")


def test_sip_compact_headers_multiple_via_and_body():
    """Compact names expand, Via lists split in order, folded lines join, body cut at Content-Length."""
    m = sip.parse_message(REG)
    assert m.method == "REGISTER" and m.uri.startswith("sip:6405")
    assert [v.split()[1] for v in m.get_all("Via")] == ["10.0.0.2:5060;branch=z9hG4bK1", "10.0.0.3;branch=z9hG4bK2",
                                                       "10.0.0.4;branch=z9hG4bK3"]
    assert m.call_id == "call-1" and m.cseq == (1, "REGISTER")
    assert m.get("subject") == "a, b" and m.get("Content-Type") == "text/plain"
    assert m.body == b"hello"
    assert sip.uri_user(m.get("From")) == "64050200001180000001" and sip.tag_of(m.get("From")) == "abc"
    assert sip.uri_hostport(m.get("Contact")) == ("10.0.0.2", 5060)
    again = sip.parse_message(m.to_bytes())
    assert again.headers == m.headers and again.body == b"hello"


def test_sip_gbk_display_name_in_from():
    """A GBK display name in From (seen on Chinese NVRs) is read instead of rejected."""
    m = sip.parse_message(REG.replace(b"f: <sip:", "f: \"后厨\" <sip:".encode("gbk")))
    assert m.get("From").startswith('"后厨"') and sip.uri_user(m.get("From")) == "64050200001180000001"


def test_sip_response_and_lf_only_lines():
    """A status line parses, and bare LF line endings are accepted."""
    m = sip.parse_message(b"SIP/2.0 401 Unauthorized\nVia: SIP/2.0/UDP a;branch=x\nFrom: <sip:a@b>\n"
                          b"To: <sip:a@b>;tag=1\nCall-ID: c\nCSeq: 2 REGISTER\nContent-Length: 0\n\n")
    assert m.status == 401 and m.reason == "Unauthorized" and not m.is_request


@pytest.mark.parametrize(("data", "needle"), [
    (b"HELLO\r\n\r\n", "neither a request nor a status line"),
    (REG.replace(b"l: 5", b"l: 50"), "Content-Length 50 exceeds"),
    (REG.replace(b"i: call-1\r\n", b""), "lacks the Call-ID"),
    (REG.replace(b"CSeq: 1 REGISTER", b"CSeq: x"), "CSeq"),
    (REG.replace(b"c: text/plain", b"bad header line"), "line 11"),
    (b"\xff\xfe REGISTER", "neither UTF-8 nor GB18030"),
])
def test_sip_errors_name_the_place(data, needle):
    """Malformed SIP raises ParseError naming what is wrong."""
    with pytest.raises(ParseError, match=needle):
        sip.parse_message(data)


def test_sip_stream_framer_splits_by_content_length():
    """Two messages fed byte by byte over TCP come out whole, bodies included."""
    one = REG.replace(b"hello-extra", b"hello")
    f = sip.SipStreamFramer()
    out = []
    for b in (b"\r\n" + one + one):
        out += f.feed(bytes([b]))
    assert out == [one, one]
    with pytest.raises(ParseError, match="lacks Content-Length"):
        sip.SipStreamFramer().feed(b"OPTIONS sip:a SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n")


OFFER = (b"v=0\r\no=64050200002000000001 0 0 IN IP4 192.168.1.10\r\ns=Play\r\nc=IN IP4 192.168.1.10\r\n"
         b"t=0 0\r\nm=video 30002 TCP/RTP/AVP 96 98 97\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\n"
         b"a=rtpmap:98 H264/90000\r\na=setup:passive\r\na=connection:new\r\ny=0100000001\r\nf=v/2/4///a///\r\n")


def test_sdp_gb_offer_fields_and_roundtrip():
    """PS/90000 over TCP/RTP/AVP with setup, connection, y= SSRC and f= parse and re-serialize."""
    s = sdp.parse_sdp(OFFER)
    v = s.video()
    assert (v.port, v.proto, v.is_tcp, v.setup, v.attr("connection")) == (30002, "TCP/RTP/AVP", True, "passive", "new")
    assert v.rtpmap["96"] == "PS/90000" and v.direction == "recvonly"
    assert s.ssrc == "0100000001" and s.ssrc_int == 100000001 and s.media_format == "v/2/4///a///"
    assert s.address_for(v) == "192.168.1.10" and s.origin_user == "64050200002000000001"
    assert sdp.parse_sdp(sdp.serialize_sdp(s)) == s
    udp = sdp.parse_sdp(OFFER.replace(b"TCP/RTP/AVP", b"RTP/AVP"))
    assert not udp.video().is_tcp


@pytest.mark.parametrize(("data", "needle"), [
    (b"o=x\r\n", "does not start with v=0"),
    (OFFER.replace(b"m=video 30002", b"m=video 99999"), "port"),
    (OFFER.replace(b"TCP/RTP/AVP", b"SCTP"), "transport"),
    (OFFER.replace(b"y=0100000001", b"y=abc"), "decimal SSRC"),
    (OFFER.replace(b"c=IN IP4 192.168.1.10", b"c=IN"), "c="),
])
def test_sdp_errors(data, needle):
    """Malformed SDP raises ParseError naming the line."""
    with pytest.raises(ParseError, match=needle):
        sdp.parse_sdp(data)


def test_manscdp_gb18030_catalog_page():
    """A GB18030 body with Chinese names decodes per its declaration; SumNum and Num are read."""
    items = [manscdp.CatalogItem("64050200001310000001", name="后厨灶台", manufacturer="海康"),
             manscdp.CatalogItem("64050200001310000002", name="洗消间", status="OFF")]
    body = manscdp.build_catalog_response(17, "64050200001180000001", 5, items, encoding="GB18030")
    assert "后厨灶台".encode("gb18030") in body
    m = manscdp.parse_manscdp(body)
    assert (m.root, m.cmd_type, m.sn, m.sum_num) == ("Response", "Catalog", 17, 5)
    assert [i.name for i in m.items] == ["后厨灶台", "洗消间"] and m.items[0].manufacturer == "海康"
    assert m.items[0].online and not m.items[1].online


def test_manscdp_keepalive_utf8_and_undeclared_gbk():
    """UTF-8 keepalive parses; a body without a declaration falls back to GB18030."""
    m = manscdp.parse_manscdp(manscdp.build_keepalive(3, "64050200001180000001", encoding="UTF-8"))
    assert (m.root, m.cmd_type, m.sn, m.fields["Status"]) == ("Notify", "Keepalive", 3, "OK")
    raw = "<Response><CmdType>DeviceInfo</CmdType><SN>4</SN><DeviceID>1</DeviceID><DeviceName>厨房</DeviceName></Response>"
    assert manscdp.parse_manscdp(raw.encode("gbk")).fields["DeviceName"] == "厨房"


@pytest.mark.parametrize(("body", "needle"), [
    (b"<Notify><CmdType>Keepalive</CmdType><DeviceID>1</DeviceID></Notify>", "lacks <SN>"),
    (b"<Notify><CmdType>Keepalive</CmdType><SN>x</SN><DeviceID>1</DeviceID></Notify>", "<SN>"),
    (b"<Foo/>", "root element"),
    (b"<Notify><CmdType>", "malformed"),
    (b'<?xml version="1.0" encoding="EBCDIC"?><Notify/>', "unsupported encoding"),
    (b'<!DOCTYPE x [<!ENTITY a "b">]><Notify/>', "DOCTYPE"),
    (b'<Response><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>1</DeviceID><SumNum>2</SumNum>'
     b'<DeviceList Num="2"><Item><DeviceID>3</DeviceID></Item></DeviceList></Response>', "Num=2 but 1"),
])
def test_manscdp_errors(body, needle):
    """Malformed MANSCDP raises ParseError naming the element."""
    with pytest.raises(ParseError, match=needle):
        manscdp.parse_manscdp(body)


def test_digest_rfc2617_vector():
    """The RFC 2617 section 3.5 example verifies with qop=auth; a wrong password does not."""
    hdr = ('Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
           'uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", '
           'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    c = digest.parse_credentials(hdr)
    assert c.qop == "auth" and c.nc == "00000001" and c.opaque.startswith("5ccc")
    assert digest.verify(c, password="Circle Of Life", method="GET")
    assert not digest.verify(c, password="circle of life", method="GET")


def test_digest_challenge_roundtrip_and_errors():
    """Challenges parse (quoted commas, escapes) and answers verify; bad headers raise ParseError."""
    ch = digest.parse_challenge('Digest realm="a,\\"b", nonce="n1", algorithm=MD5, qop="auth,auth-int"')
    assert ch.realm == 'a,"b' and ch.qop == ["auth", "auth-int"]
    ans = digest.answer(ch, username="u", password="p", method="REGISTER", uri="sip:x")
    assert digest.verify(digest.parse_credentials(ans.to_header()), password="p", method="REGISTER")
    for bad, needle in (('Basic abc', "not Digest"), ('Digest realm="x', "unterminated"),
                        ('Digest realm="x", nonce="y", algorithm=SHA1', "not supported"),
                        ('Digest username="u"', "lacks")):
        with pytest.raises(ParseError, match=needle):
            (digest.parse_credentials if "username" in bad else digest.parse_challenge)(bad)


def test_rtp_header_csrc_extension_padding():
    """CSRCs, a header extension and padding are parsed off; the payload is exact."""
    p = rtp.RtpPacket(96, 65535, 3000, 0x01020304, b"payload", marker=True, csrcs=[7, 8], ext_profile=0xBEDE,
                      ext_data=b"\x01\x02\x03\x04", padding=3)
    raw = rtp.build_rtp(p)
    q = rtp.parse_rtp(raw)
    assert (q.payload, q.csrcs, q.ext_profile, q.ext_data, q.padding, q.marker, q.seq) == (
        b"payload", [7, 8], 0xBEDE, b"\x01\x02\x03\x04", 3, True, 65535)
    for bad, needle in ((raw[:8], "shorter than the 12-byte"), (b"\x40" + raw[1:], "version 1"),
                        (raw[:-1] + b"\xff", "padding"), (b"\x9f" + raw[1:14], "CSRC")):
        with pytest.raises(ParseError, match=needle):
            rtp.parse_rtp(bad)


def _pkts(seqs):
    return [rtp.RtpPacket(96, s & 0xFFFF, 0, 1, bytes([s & 0xFF])) for s in seqs]


def test_reorder_buffer_reorders_and_wraps():
    """Reordered packets across the 16-bit wrap come out in order; duplicates are dropped."""
    buf = rtp.ReorderBuffer(window=8)
    out = []
    for p in _pkts([65534, 0, 65535, 1, 1, 3, 2]):
        out += buf.push(p)
    assert [p.seq for p in out] == [65534, 65535, 0, 1, 2, 3]
    assert buf.late == 1 and buf.lost == 0


def test_reorder_buffer_skips_a_lost_packet_after_the_window():
    """A lost packet is waited for at most `window` packets, then skipped and counted."""
    buf = rtp.ReorderBuffer(window=4)
    out = []
    for p in _pkts([10, 11, 13, 14, 15, 16]):
        out += buf.push(p)
    assert [p.seq for p in out] == [10, 11]
    out += buf.push(_pkts([17])[0])
    assert [p.seq for p in out] == [10, 11, 13, 14, 15, 16, 17] and buf.lost == 1
    assert buf.push(_pkts([12])[0]) == [] and buf.late == 1


def test_reorder_buffer_keeps_a_first_packet_overtaken_by_the_second():
    """UDP may deliver the stream's second packet first: the first (which opens the key frame) is kept."""
    buf = rtp.ReorderBuffer(window=8)
    out = []
    for p in _pkts([101, 100, 102]):
        out += buf.push(p)
    assert out == []  # still gathering the start
    out += buf.push(_pkts([103])[0])
    assert [p.seq for p in out] == [100, 101, 102, 103] and buf.late == 0 and buf.lost == 0
    short = rtp.ReorderBuffer(window=8)
    assert short.push(_pkts([7])[0]) == [] and [p.seq for p in short.flush()] == [7]  # a stream shorter than the start


def test_tcp_framing_4571_and_dollar():
    """RFC 4571 and `$` interleaved frames split across reads; RTCP channel 1 is dropped; garbage raises."""
    a, b = rtp.build_rtp(_pkts([1])[0]), rtp.build_rtp(_pkts([2])[0])
    stream = frame_4571(a) + frame_4571(b)
    d = TcpRtpDeframer()
    assert d.feed(stream[:3]) == [] and d.feed(stream[3:]) == [a, b] and d.mode == "4571"
    inter = frame_interleaved(a, 0) + frame_interleaved(b"\x80rtcp", 1) + frame_interleaved(b, 0)
    d = TcpRtpDeframer()
    got = []
    for i in range(len(inter)):
        got += d.feed(inter[i: i + 1])
    assert got == [a, b] and d.mode == "interleaved" and d.channels == {0: 2, 1: 1}
    with pytest.raises(ParseError, match="expected '\\$'"):
        d.feed(b"X" + inter)


def test_ps_demux_h265_psm_pes_split_and_pts():
    """A PSM declaring H.265 (0x24), a frame split over two PES, and PTS are demuxed into one unit."""
    au = b"\x00\x00\x00\x01\x40\x01" + bytes(range(256)) * 300  # larger than one PES
    data = psmux.mux_access_unit(au, 123456, keyframe=True, stream_type=0x24)
    data += psmux.mux_access_unit(b"\x00\x00\x01\x02\x01tail", 126459, keyframe=False, stream_type=0x24)
    units = ps.demux_ps(data)
    assert [(u.codec, u.pts) for u in units] == [("hevc", 123456), ("hevc", 126459)]
    assert units[0].data == au and units[1].data.endswith(b"tail")
    d = ps.PsDemuxer()
    streamed = []
    for i in range(0, len(data), 7):
        streamed += d.feed(data[i: i + 7])
    streamed += d.end_of_frame()
    assert [u.data for u in streamed] == [u.data for u in units] and d.errors == 0


def test_ps_resyncs_after_garbage_and_strict_names_offset():
    """The streaming demuxer skips garbage to the next pack header; strict demux raises with the offset."""
    good = psmux.mux_access_unit(b"\x00\x00\x01\x65frame", 900, keyframe=True)
    d = ps.PsDemuxer()
    units = d.feed(good + b"\x00\x00\x01\xe0\xff" + b"junk" * 10 + good) + d.end_of_frame()
    assert [u.data for u in units] == [b"\x00\x00\x01\x65frame"] * 2 and d.errors >= 1
    mpeg1 = b"\x00\x00\x01\xba\x21" + b"\x00" * 7 + psmux.pes(b"x", 90)
    assert ps.demux_ps(mpeg1)[0].data == b"x"
    with pytest.raises(ParseError, match="PS pack header at offset 0"):
        ps.demux_ps(b"\x00\x00\x01\xba\xff" + b"\x00" * 20)
    bad_pes = b"\x00\x00\x01\xe0" + struct.pack("!H", 3) + b"\x80\x80\x09"
    with pytest.raises(ParseError, match="header_data_length"):
        ps.parse_pes(bad_pes)


def test_media_receiver_survives_loss_reorder_and_foreign_ssrc(tmp_path):
    """Real H.264 in PS/RTP with one packet lost, two swapped and a stray SSRC loses exactly one frame."""
    from support.gb_device_emulator import load_h264_units, packetize

    from edge_agent.capture.gb28181.rtp_receiver import MediaReceiver

    units = load_h264_units(tmp_path)[:10]
    frames = packetize(units, ssrc=42)
    pkts = [p for f in frames for p in f]
    lost_index = len(frames[0]) + 1  # inside frame 1
    pkts = pkts[:lost_index] + pkts[lost_index + 1:]
    pkts[3], pkts[4] = pkts[4], pkts[3]
    stray = rtp.build_rtp(rtp.RtpPacket(96, 7, 0, 99, b"x"))
    rx = MediaReceiver(expected_ssrc=1000, reorder_window=4)
    rx.on_rtp(pkts[0])
    rx.on_rtp(stray)
    rx.on_rtp(b"\x00garbage")
    for p in pkts[1:]:
        rx.on_rtp(p)
    got = []
    while not rx.units.empty():
        got.append(rx.units.get_nowait())
    assert rx.expected_ssrc == 42 and rx.stats.ssrc_rebinds == 1 and rx.stats.foreign_ssrc == 1
    assert rx.stats.bad_rtp == 1 and rx.reorder.lost == 1
    # The frame with the lost packet is dropped at the PS layer (resync); every other frame is exact.
    assert [u.data for u in got] == [units[0]] + units[2:]
    assert rx.demux.errors >= 1
