"""Request bodies of the workflow endpoints as pydantic models: one definition for validation (400
naming the field: `deadline: Input should be a valid string`) and for the OpenAPI document.

Unknown keys are refused (a misspelt `dedline` must not pass unnoticed). Times stay text here and
are parsed by `params.parse_time`, which accepts RFC 3339 with a zone only.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter

from bk_contract.payloads import CommandName
from cloud_receiver.control.commands import TTL_DEFAULT_S, TTL_MAX_S
from cloud_receiver.ledgers.models import count
from cloud_receiver.workflow.rectify import NOTE_MAX

DATE_TIME = {"type": "string", "format": "date-time",
             "description": "RFC 3339 time with a zone, e.g. 2024-05-03T18:00:00+08:00; must lie in the future."}
Deadline = Annotated[str, Field(json_schema_extra=DATE_TIME)]
Note = Annotated[str, Field(max_length=NOTE_MAX)]
# what the workflow requires of a note that must say something: not blank
Said = Annotated[str, Field(min_length=1, max_length=NOTE_MAX, pattern=r"\S")]
JPEG_BASE64 = r"^/9j/(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeadlineBody(_Body):
    deadline: Deadline
    note: Note = ""


class Approve(_Body):
    decision: Literal["approve"]
    note: Note = ""


class Reject(_Body):
    """A rejection says what is still wrong and gives a new deadline."""

    decision: Literal["reject"]
    note: Said
    deadline: Deadline


Review = Annotated[Approve | Reject, Field(discriminator="decision")]
REVIEW = TypeAdapter(Review)


def _jpeg_base64(value: str) -> str:
    if not value.startswith("/9j/"):
        raise ValueError("the photo must be a JPEG image (base64 of a JPEG starts with /9j/)")
    if not re.match(JPEG_BASE64, value):
        raise ValueError("not valid base64 (A-Z a-z 0-9 + /, padded with = to a multiple of 4)")
    return value


class RectificationJson(_Body):
    note: Said
    photo_base64: Annotated[str, AfterValidator(_jpeg_base64), Field(
        min_length=4, json_schema_extra={"pattern": JPEG_BASE64, "contentEncoding": "base64",
                                         "contentMediaType": "image/jpeg"})]


class LedgerPhotoJson(_Body):
    """A ledger photo (`POST /canteens/{id}/ledger-photos`) sent as JSON."""

    photo_base64: Annotated[str, AfterValidator(_jpeg_base64), Field(
        min_length=4, json_schema_extra={"pattern": JPEG_BASE64, "contentEncoding": "base64",
                                         "contentMediaType": "image/jpeg"})]


class CommandBody(_Body):
    """A command to a box (`POST /devices/{id}/commands`)."""

    name: CommandName
    camera_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None
    args: dict[Annotated[str, Field(max_length=64)], str | int | float | bool] = Field(default_factory=dict,
                                                                                     max_length=32)
    ttl_s: count(5, TTL_MAX_S) = Field(TTL_DEFAULT_S, description="How long the box may still act on it (s).")


def schema_of(model: Any) -> dict[str, Any]:
    """The JSON schema of a model or adapter, without pydantic's titles, for the OpenAPI document."""
    raw = (model if isinstance(model, TypeAdapter) else TypeAdapter(model)).json_schema(
        ref_template="#/components/schemas/{model}")
    return _untitled(raw)


def _untitled(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _untitled(v) for k, v in node.items() if k != "title" or not isinstance(v, str)}
    if isinstance(node, list):
        return [_untitled(v) for v in node]
    return node
