"""The shared paho property tables: decoding gives exactly what paho's own Properties gives."""

from __future__ import annotations

import pytest
from paho.mqtt.exception import MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_receiver import paho_tuning


def _sent() -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = 3600
    props.ContentType = "application/json"
    props.ResponseTopic = "bk/v1/64050200001180000001/cmd/result"
    props.CorrelationData = b"\x01\x02"
    props.UserProperty = [("trace", "abc"), ("设备", "一号机")]
    return props


def _decode(packed: bytes) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.unpack(packed)
    return props


@pytest.fixture
def original_then_shared():
    paho_tuning.restore()
    yield
    paho_tuning.restore()


def test_shared_tables_decode_like_paho(original_then_shared):
    """Properties packed by paho decode to the same values with paho's tables and with the shared ones."""
    packed = _sent().pack()
    before = _decode(packed)
    assert paho_tuning.share_property_tables() is True
    assert Properties.__init__ is not paho_tuning._original_init
    after, other = _decode(packed), _decode(_sent().pack())
    assert after.json() == before.json() and after.pack() == packed
    assert after.UserProperty == [("trace", "abc"), ("设备", "一号机")]
    empty = Properties(PacketTypes.PUBLISH)
    assert not hasattr(empty, "UserProperty") and empty.isEmpty()  # values stay per object
    assert other.names is after.names  # only the constant tables are shared
    with pytest.raises(MQTTException, match="does not apply"):
        Properties(PacketTypes.CONNACK).MessageExpiryInterval = 5  # paho's own checks still apply
    assert paho_tuning.share_property_tables() is True  # idempotent


def test_not_applied_to_an_unknown_paho(original_then_shared, monkeypatch):
    """Another paho major version: nothing is replaced."""
    monkeypatch.setattr(paho_tuning.paho.mqtt, "__version__", "3.0.0")
    assert paho_tuning.share_property_tables() is False
    assert Properties.__init__ is paho_tuning._original_init
