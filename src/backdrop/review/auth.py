"""Sign-in for reviewers: scrypt password hashes, signed expiring session cookies, CSRF tokens.

Users and their hashes come from `review.users` in params.yaml (`backdrop review hash-password`
makes a hash; a plain password is refused when params are loaded). A session is a cookie
`user|expires|nonce|hmac`, signed with the key in `$<review.secret_env>` (a random key per process
when unset: restarting the server then signs everyone out). Every form carries a CSRF token, the
HMAC of the session's nonce: a page from another site cannot read it, so it cannot post for the user.
Before sign-in, the login form's token is tied to a separate random cookie the same way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SESSION_COOKIE, LOGIN_COOKIE = "backdrop_review", "backdrop_review_login"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$salt$hash` (stdlib hashlib.scrypt; 16 MiB and ~50 ms per check)."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, hashed: str) -> bool:
    try:
        kind, n, r, p, salt, digest = hashed.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(_unb64(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


@dataclass(frozen=True)
class Session:
    user: str
    expires: float
    nonce: str


class Signer:
    """Makes and checks session cookies and CSRF tokens with one key."""

    def __init__(self, secret: str | None, minutes: float):
        self.key = (secret or secrets.token_urlsafe(32)).encode()
        self.seconds = minutes * 60.0

    def _mac(self, text: str) -> str:
        return _b64(hmac.new(self.key, text.encode(), hashlib.sha256).digest())

    def issue(self, user: str, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.seconds)
        body = f"{user}|{expires}|{secrets.token_urlsafe(16)}"
        return f"{body}|{self._mac(body)}"

    def session(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie holds; None when absent, forged or expired."""
        if not cookie or cookie.count("|") != 3:
            return None
        body, _, mac = cookie.rpartition("|")
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        user, expires, nonce = body.split("|")
        if not expires.isdigit() or int(expires) <= (now or time.time()):
            return None
        return Session(user, float(expires), nonce)

    def csrf(self, nonce: str) -> str:
        return self._mac(f"csrf|{nonce}")

    def check_csrf(self, nonce: str | None, token: str | None) -> bool:
        return bool(nonce and token) and hmac.compare_digest(self.csrf(nonce), token)

    @staticmethod
    def login_nonce() -> str:
        return secrets.token_urlsafe(16)


def signer_from_env(env_name: str, minutes: float) -> Signer:
    return Signer(os.environ.get(env_name) or None, minutes)
