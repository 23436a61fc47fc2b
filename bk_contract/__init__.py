"""The edge–cloud contract: MQTT topics, payload models and the media chunk format (version 1).

Both the edge agent and the cloud receiver import this package; it depends only on pydantic.
The frozen, human-readable form is docs/mqtt.md.
"""

from bk_contract.media import ChunkHeader, decode_chunk, encode_chunk, split_media
from bk_contract.payloads import (
    Alert,
    AlertBox,
    CameraHealth,
    Command,
    CommandResult,
    MediaRef,
    Status,
    Telemetry,
)
from bk_contract.topics import PREFIX, TopicError, parse_topic, topic

__all__ = [
    "PREFIX",
    "Alert",
    "AlertBox",
    "CameraHealth",
    "ChunkHeader",
    "Command",
    "CommandResult",
    "MediaRef",
    "Status",
    "Telemetry",
    "TopicError",
    "decode_chunk",
    "encode_chunk",
    "parse_topic",
    "split_media",
    "topic",
]
