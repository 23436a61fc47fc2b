"""One measured speed-up of paho-mqtt for the receiver's hot path.

paho-mqtt 2.x decodes the properties of every MQTT v5 PUBLISH it receives into a new
`paho.mqtt.properties.Properties`, and each one builds its own copies of three lookup tables
(property names, property types and which packets allow them): ~10 µs per message, about a
tenth of what the receiver spends on an alert. paho only ever reads those tables, so
`share_property_tables()` makes new objects share one copy.

It is applied once, by the subscriber, and only when paho's tables are exactly what this was
written against (paho-mqtt 2.x); otherwise it changes nothing and says so in the log.
Delete the call in cloud_receiver/mqtt.py to go back to paho's own behaviour.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = structlog.get_logger(__name__)

_TABLES = ("types", "names", "properties")
_original_init = Properties.__init__


def _shared_init(self: Properties, packetType: int) -> None:  # noqa: N803 - paho's parameter name
    # paho's __setattr__ treats these four names as plain attributes; bypass it like its own __init__ does
    fields: dict[str, Any] = self.__dict__
    fields["packetType"] = packetType
    fields.update(_SHARED)


_SHARED: dict[str, Any] = {}


def share_property_tables() -> bool:
    """Install the shared-table __init__ (idempotent); True if active, False if paho did not match."""
    if Properties.__init__ is _shared_init:
        return True
    if not paho.mqtt.__version__.startswith("2."):
        log.info("paho property tables not shared", reason=f"untested paho-mqtt {paho.mqtt.__version__}")
        return False
    reference = Properties(PacketTypes.PUBLISH)
    if set(vars(reference)) != {"packetType", *_TABLES}:
        log.info("paho property tables not shared", reason="paho Properties has other per-object state")
        return False
    _SHARED.update({name: vars(reference)[name] for name in _TABLES})
    Properties.__init__ = _shared_init  # type: ignore[method-assign]
    return True


def restore() -> None:
    """paho's own __init__ again (tests)."""
    Properties.__init__ = _original_init  # type: ignore[method-assign]
