"""Short content digests: run ids, settings digests and cache keys name what made them."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(payload: Any, length: int = 10) -> str:
    """The first `length` hex digits of the SHA-256 of `payload` as sorted JSON."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:length]
