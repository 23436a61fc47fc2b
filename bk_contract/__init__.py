"""What the edge agent and the cloud receiver share: the MQTT contract (topics, payload models and
the media chunk format, version 1; frozen in docs/mqtt.md) and the line-numbered YAML config
loader (`bk_common.yamlconf`). Depends only on pydantic and PyYAML.
"""

from bk_contract.chunks import ChunkHeader, decode_chunk, encode_chunk, split_media
from bk_contract.media_types import MEDIA_TYPES, media_type_problem, sniff_media_type
from bk_contract.payloads import (
    COMMAND_NAMES,
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
    "COMMAND_NAMES",
    "MEDIA_TYPES",
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
    "media_type_problem",
    "parse_topic",
    "sniff_media_type",
    "split_media",
    "topic",
]
