"""HTTP digest authentication for SIP (RFC 2617 / RFC 7616): MD5, MD5-sess, SHA-256, qop=auth."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from edge_agent.errors import ParseError

_ALGOS = {"MD5": "md5", "MD5-SESS": "md5", "SHA-256": "sha256", "SHA-256-SESS": "sha256"}
MAX_HEADER = 4096


def _q(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class DigestChallenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: list[str] | None = None
    opaque: str | None = None

    def to_header(self) -> str:
        parts = [f"realm={_q(self.realm)}", f"nonce={_q(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_q(self.opaque)}")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f'qop="{",".join(self.qop)}"')
        return "Digest " + ", ".join(parts)


@dataclass
class DigestCredentials:
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    def to_header(self) -> str:
        parts = [f"username={_q(self.username)}", f"realm={_q(self.realm)}", f"nonce={_q(self.nonce)}",
                 f"uri={_q(self.uri)}", f"response={_q(self.response)}", f"algorithm={self.algorithm}"]
        if self.qop:
            parts += [f"qop={self.qop}", f"nc={self.nc}", f"cnonce={_q(self.cnonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_q(self.opaque)}")
        return "Digest " + ", ".join(parts)


def parse_params(value: str) -> dict[str, str]:
    """`Digest a="x", b=y` -> {'a': 'x', 'b': 'y'}; quoted strings may hold commas and escapes."""
    if len(value) > MAX_HEADER:
        raise ParseError(f"digest header of {len(value)} chars exceeds {MAX_HEADER}")
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ParseError(f"auth scheme {scheme[:20]!r} is not Digest")
    out: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t,":
            i += 1
        if i >= n:
            break
        eq = rest.find("=", i)
        if eq < 0:
            raise ParseError(f"digest parameter at char {i} lacks '='")
        key = rest[i:eq].strip().lower()
        if not key or not all(c.isalnum() or c in "-_" for c in key):
            raise ParseError(f"digest parameter name {key[:20]!r} at char {i} is invalid")
        i = eq + 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            buf = []
            while True:
                if i >= n:
                    raise ParseError(f"digest parameter {key!r}: unterminated quoted string")
                ch = rest[i]
                if ch == "\\" and i + 1 < n:
                    buf.append(rest[i + 1])
                    i += 2
                    continue
                if ch == '"':
                    i += 1
                    break
                buf.append(ch)
                i += 1
            val = "".join(buf)
        else:
            j = rest.find(",", i)
            j = n if j < 0 else j
            val = rest[i:j].strip()
            i = j
        out[key] = val
    return out


def _algorithm(params: dict[str, str]) -> str:
    algo = params.get("algorithm", "MD5").upper()
    if algo not in _ALGOS:
        raise ParseError(f"digest algorithm {algo[:20]!r} is not supported (MD5, MD5-sess, SHA-256)")
    return algo


def parse_challenge(value: str) -> DigestChallenge:
    p = parse_params(value)
    if "realm" not in p or "nonce" not in p:
        raise ParseError("WWW-Authenticate lacks realm or nonce")
    qop = [q.strip() for q in p["qop"].split(",") if q.strip()] if "qop" in p else None
    return DigestChallenge(realm=p["realm"], nonce=p["nonce"], algorithm=_algorithm(p), qop=qop, opaque=p.get("opaque"))


def parse_credentials(value: str) -> DigestCredentials:
    p = parse_params(value)
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
    if missing:
        raise ParseError(f"Authorization lacks {', '.join(missing)}")
    qop = p.get("qop")
    if qop is not None:
        if qop.lower() != "auth":
            raise ParseError(f"Authorization qop {qop[:20]!r} is not 'auth'")
        if "nc" not in p or "cnonce" not in p:
            raise ParseError("Authorization with qop lacks nc or cnonce")
    return DigestCredentials(username=p["username"], realm=p["realm"], nonce=p["nonce"], uri=p["uri"],
                             response=p["response"], algorithm=_algorithm(p), qop=qop, nc=p.get("nc"),
                             cnonce=p.get("cnonce"), opaque=p.get("opaque"))


def _h(algo: str, text: str) -> str:
    return hashlib.new(_ALGOS[algo.upper()], text.encode("utf-8")).hexdigest()


def compute_response(*, algorithm: str, username: str, realm: str, password: str, method: str, uri: str,
                     nonce: str, qop: str | None = None, nc: str | None = None, cnonce: str | None = None) -> str:
    algo = algorithm.upper()
    ha1 = _h(algo, f"{username}:{realm}:{password}")
    if algo.endswith("-SESS"):
        ha1 = _h(algo, f"{ha1}:{nonce}:{cnonce or ''}")
    ha2 = _h(algo, f"{method}:{uri}")
    if qop:
        return _h(algo, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(algo, f"{ha1}:{nonce}:{ha2}")


def verify(creds: DigestCredentials, *, password: str, method: str) -> bool:
    expected = compute_response(algorithm=creds.algorithm, username=creds.username, realm=creds.realm,
                                password=password, method=method, uri=creds.uri, nonce=creds.nonce,
                                qop=creds.qop, nc=creds.nc, cnonce=creds.cnonce)
    return hmac.compare_digest(expected.encode(), creds.response.lower().encode("utf-8", "replace"))


def answer(challenge: DigestChallenge, *, username: str, password: str, method: str, uri: str,
           nc: int = 1) -> DigestCredentials:
    """Client side: credentials answering a challenge (used by the device emulator)."""
    qop = "auth" if challenge.qop and "auth" in challenge.qop else None
    cnonce = secrets.token_hex(8) if qop else None
    ncs = f"{nc:08x}" if qop else None
    resp = compute_response(algorithm=challenge.algorithm, username=username, realm=challenge.realm,
                            password=password, method=method, uri=uri, nonce=challenge.nonce, qop=qop,
                            nc=ncs, cnonce=cnonce)
    return DigestCredentials(username=username, realm=challenge.realm, nonce=challenge.nonce, uri=uri,
                             response=resp, algorithm=challenge.algorithm, qop=qop, nc=ncs, cnonce=cnonce,
                             opaque=challenge.opaque)
