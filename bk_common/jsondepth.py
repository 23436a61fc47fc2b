"""How deep JSON text nests, measured before it is parsed: a hostile body (an HTTP request, an MQTT
payload) 30,000 brackets deep would make a recursive parser fail deep inside (RecursionError)."""

from __future__ import annotations

_BRACKETS_ONLY = bytes.maketrans(b"{}", b"[]")  # depth does not care which kind of bracket
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def nests_deeper(raw: bytes, limit: int) -> bool:
    """Whether arrays and objects in the JSON text `raw` nest deeper than `limit` (strings do not count).

    No parsing and no Python loop over bytes: a body with at most `limit` brackets cannot; otherwise
    escapes are dropped, then what lies between quotes, then everything but brackets (C-speed bytes
    operations), and the innermost pairs are removed once per level, `limit` + 1 passes at most.
    Brackets that never pair up (not JSON) count as deep as they are many."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(text.split(b'"')[0::2]).translate(_BRACKETS_ONLY, _NOT_A_BRACKET)
    for depth in range(limit + 1):
        if not brackets:
            return False
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            return depth + len(brackets) > limit
        brackets = shorter
    return True
