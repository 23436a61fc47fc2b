"""docs/mqtt.md cannot drift from bk_contract: schemas, topics, chunk layout, auth reason codes."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bk_contract
from edge_agent.uplink.session import AUTH_FAILED_CODES

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "mqtt.md"
_spec = importlib.util.spec_from_file_location("gen_contract_docs", REPO / "scripts" / "gen_contract_docs.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)


@pytest.mark.parametrize("name", sorted(gen.MODELS))
def test_doc_schema_equals_model(name):
    """Each schema written in docs/mqtt.md equals what the pydantic model generates now."""
    assert gen.doc_schemas(DOC.read_text(encoding="utf-8"))[name] == gen.MODELS[name].model_json_schema()


def test_generator_check_passes():
    """`scripts/gen_contract_docs.py --check` agrees the doc is current."""
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_contract_docs.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_generator_detects_a_stale_doc(tmp_path):
    """A doc with an edited schema is reported stale (the check can fail)."""
    stale = tmp_path / "mqtt.md"
    stale.write_text(DOC.read_text(encoding="utf-8").replace('"Alert"', '"Alarm"', 1), encoding="utf-8")
    assert gen.main(["--check", "--doc", str(stale)]) == 1


def test_documented_topics_parse():
    """Every device topic in the doc's table is a valid contract topic of the same kind."""
    dev = "64050200001180000001"
    rows = re.findall(r"^\| `(bk/v1/[^`]+)` \|", DOC.read_text(encoding="utf-8"), re.M)
    assert len(rows) == 7
    for row in rows:
        name = row.format(device_id=dev, media_id="abc", seq=3, camera_id="cam1")
        parsed = bk_contract.parse_topic(name)
        assert parsed.device_id == dev
        assert name == bk_contract.topic(dev, parsed.kind, media_id=parsed.media_id, seq=parsed.seq,
                                         camera_id=parsed.camera_id)


def test_chunk_layout_offsets_match_code():
    """The documented header (53 bytes + content type) is what encode_chunk writes."""
    digest, chunks = bk_contract.split_media(b"hello", "image/jpeg", 1024)
    raw = chunks[0]
    assert raw[:4] == b"BKM1" and raw[20:52].hex() == digest and raw[52] == len("image/jpeg")
    assert raw[53:63] == b"image/jpeg" and raw[63:] == b"hello"
    text = DOC.read_text(encoding="utf-8")
    assert "| 52 | 1 | ctype length |" in text and "| 53 + n | rest | data |" in text


def test_auth_reason_codes_documented():
    """The CONNACK codes that stop reconnecting are exactly the ones documented."""
    text = DOC.read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| CONNACK | 0x86"))
    assert set(int(c, 16) for c in re.findall(r"0x([0-9A-F]{2})", row)) == set(AUTH_FAILED_CODES)
