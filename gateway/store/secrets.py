"""Hashing of account secrets.

Passwords and API keys are stored as scrypt hashes (hashlib.scrypt, a random 16-byte
salt per secret, n=2**14, r=8, p=1: about 16 MiB and tens of milliseconds per check),
encoded ``scrypt$n$r$p$<salt b64>$<hash b64>``.

An API key arrives with every HTTP request, so it cannot be found by trying scrypt
against every account. Each account also stores ``sha256(api_key)`` in an indexed,
unique column: the lookup finds the one candidate, and scrypt then verifies it (the
sha256 alone would let a stolen database be brute-forced fast for a weak, configured
key like "acme-key"). The store caches successful verifications in memory, so a
request costs one sha256 and a dict lookup after the first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

__all__ = ["api_key_lookup", "hash_secret", "new_api_key", "new_webhook_secret", "verify_secret"]

_N, _R, _P, _DKLEN = 2**14, 8, 1, 32


def hash_secret(secret: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_secret(secret: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = encoded.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
        digest = hashlib.scrypt(
            secret.encode(), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except ValueError:
        return False
    return hmac.compare_digest(digest, expected)


def api_key_lookup(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    return secrets.token_urlsafe(32)


def new_webhook_secret() -> str:
    return secrets.token_hex(32)
