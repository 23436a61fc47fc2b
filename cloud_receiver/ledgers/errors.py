"""The ledgers' named exceptions; the API answers them 422 and 403 (not-found and conflicts reuse
`cloud_receiver.workflow.queries.NotFound` / `Conflict`: 404 and 409)."""

from __future__ import annotations


class Impossible(ValueError):
    """The request is well-formed but cannot be done; `field` names what is at fault (answered 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Forbidden(PermissionError):
    """The principal's role may not do this to a canteen it can see (answered 403)."""
