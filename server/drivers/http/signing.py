"""Inngest signing keys: request signatures as the SDKs verify them, and the hashed-key bearer
tokens the SDKs send when they call the server.

A signing key is `signkey-<env>-<hex>`. Signatures are `t=<unix s>&s=<hex HMAC-SHA256>`, keyed
with the key's hex text (prefix removed) over the body followed by the timestamp; the SDKs
canonicalise a request body (RFC 8785) before checking it, and sign their raw response
bodies; a signature more than five minutes from now is refused. Bearer tokens carry SHA-256
of the key's hex-decoded bytes, with or without the prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence
from urllib.parse import parse_qs

_PREFIX = re.compile(r"^signkey-\w+-")
# A signature's timestamp may be this far from now, either way (as the Inngest SDKs check ours).
WINDOW_S = 5 * 60


def strip_prefix(key: str) -> str:
    return _PREFIX.sub("", key, count=1)


def hashed_key(key: str) -> str:
    """SHA-256 of the key's bytes, as the SDKs send it in `Authorization: Bearer …`."""
    return hashlib.sha256(bytes.fromhex(strip_prefix(key))).hexdigest()


def _mac(body: bytes, key: str, ts: str) -> str:
    return hmac.new(strip_prefix(key).encode(), body + ts.encode(), hashlib.sha256).hexdigest()


def sign(body: bytes, key: str, now_s: int | None = None) -> str:
    """The X-Inngest-Signature value for `body` (canonical JSON for requests to SDK apps)."""
    ts = str(int(time.time()) if now_s is None else now_s)
    return f"t={ts}&s={_mac(body, key, ts)}"


def verify(header: str | None, body: bytes, keys: Sequence[str],
           now_s: float | None = None) -> bool:
    """Whether `header` signs `body` with one of `keys` (the SDKs sign their raw responses),
    at a time within WINDOW_S of now either way: a captured answer cannot be replayed later."""
    if not header:
        return False
    parsed = parse_qs(header)
    ts, sig = parsed.get("t", [""])[0], parsed.get("s", [""])[0]
    if not ts.isascii() or not ts.isdigit() or len(ts) > 12 or not sig:
        return False
    now = time.time() if now_s is None else now_s
    if abs(now - int(ts)) > WINDOW_S:
        return False
    return any(hmac.compare_digest(_mac(body, key, ts), sig) for key in keys if key)


def bearer_matches(authorization: str | None, keys: Sequence[str]) -> bool:
    """Whether `Authorization: Bearer <token>` carries one of `keys`, raw or hashed, with or
    without its `signkey-<env>-` prefix (py sends the bare hash, js prefixes it)."""
    if not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    token = strip_prefix(token.strip()).lower()
    for key in keys:
        if not key:
            continue
        for accepted in (strip_prefix(key).lower(), hashed_key(key)):
            if hmac.compare_digest(token.encode(), accepted.encode()):
                return True
    return False
