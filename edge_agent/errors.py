"""The few named exceptions of the edge agent.

Library errors are translated once, where they enter, into one of two kinds:
`RetryLater` (the thing may come back by itself: camera unreachable, broker down) and
`NeedsHuman` (it will not: bad credentials, invalid config, a refused publish).
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base of all edge agent errors."""


class RetryLater(EdgeError):
    """Temporarily unavailable; retry with back-off."""


class NeedsHuman(EdgeError):
    """Retrying will not help; an installer or operator must act."""


class AuthFailed(NeedsHuman):
    """Credentials were refused."""


class ConfigError(NeedsHuman):
    """The configuration is invalid; the message names the file, line and key path."""


class ModelError(NeedsHuman):
    """A model file or its manifest is missing, corrupt or inconsistent."""


class ParseError(EdgeError):
    """Malformed protocol input (SIP, SDP, MANSCDP, RTP, PS, MQTT payload); names what and where."""
