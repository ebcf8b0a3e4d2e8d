"""Seeded event ids: the Inngest SDKs send `x-inngest-event-id-seed: <unix ms>,<base64 of 10
random bytes>` with every send, so a retried send gets the same ids back (and the same runs).

As the Inngest server does, event i of a request (counting from 1) gets the ULID made of the
seed's milliseconds and its entropy with i added to the last four bytes (big-endian).
"""

from __future__ import annotations

import base64
import binascii

from ulid import ULID

from server.errors import InvalidArgument

HEADER = "x-inngest-event-id-seed"
_SHAPE = "must be '<unix ms>,<base64 of 10 bytes>'"


def seeded_ids(seed: str, count: int) -> list[str]:
    """ULIDs for `count` events from one seed header value."""
    millis_text, sep, entropy_text = seed.strip().partition(",")
    if not sep or not millis_text.isdigit():
        raise InvalidArgument(HEADER, _SHAPE)
    millis = int(millis_text)
    try:
        entropy = base64.b64decode(entropy_text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(HEADER, _SHAPE) from None
    if len(entropy) != 10 or not 0 < millis < 2**48:
        raise InvalidArgument(HEADER, _SHAPE)
    base = int.from_bytes(entropy[6:10], "big")
    ids = []
    for index in range(1, count + 1):
        tail = ((base + index) % 2**32).to_bytes(4, "big")
        ids.append(str(ULID.from_bytes(millis.to_bytes(6, "big") + entropy[:6] + tail)))
    return ids
