"""Console users, passwords (argon2id), sessions and CSRF tokens.

Passwords are never stored: ``console.users[].password_hash`` holds an argon2id hash
(``metrogate console --hash-password``). A login creates a server-side session: a
random token in a cookie that is ``HttpOnly`` and ``SameSite=Strict`` (``Secure`` with
``console.secure_cookies``), and a per-session CSRF token that every form carries.
Sessions live in memory (a restart logs everyone out) and expire after
``console.session_ttl``; their number is bounded. Failed logins are throttled per
user name.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from supervision.config import ConsoleUser

__all__ = ["Session", "Sessions", "Users", "hash_password"]

_HASHER = PasswordHasher()
MAX_SESSIONS = 10_000
FAILURES_ALLOWED = 5
FAILURE_WINDOW_S = 300.0
LOCKOUT_S = 60.0


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` for ``console.users[].password_hash``."""
    return _HASHER.hash(password)


class Users:
    """The configured users; :meth:`verify` checks a name and password (slow on purpose)."""

    def __init__(self, users: Iterable[ConsoleUser]) -> None:
        self.by_name = {u.name: u for u in users}
        self._dummy = _HASHER.hash(secrets.token_hex(16))
        self._failures: dict[str, deque[float]] = {}

    def throttled(self, name: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        recent = self._failures.get(name)
        if not recent:
            return False
        while recent and now - recent[0] > FAILURE_WINDOW_S:
            recent.popleft()
        return len(recent) >= FAILURES_ALLOWED and now - recent[-1] < LOCKOUT_S

    def verify(self, name: str, password: str) -> ConsoleUser | None:
        """The user when the password matches its hash; None otherwise (also for unknown
        names, after the same work, so timing does not tell which names exist)."""
        user = self.by_name.get(name)
        stored = user.password_hash.get_secret_value() if user else self._dummy
        ok: bool
        try:
            ok = _HASHER.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if ok and user is not None:
            self._failures.pop(name, None)
            return user
        if len(self._failures) > 10_000:
            self._failures.clear()
        self._failures.setdefault(name, deque(maxlen=FAILURES_ALLOWED * 2)).append(time.monotonic())
        return None


@dataclass(slots=True)
class Session:
    token: str
    user: str
    role: str
    language: str
    csrf: str
    expires: float
    flash: list[str] = field(default_factory=list)

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given, self.csrf)


class Sessions:
    """Server-side sessions by token, bounded in number and age."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._by_token: dict[str, Session] = {}

    def create(self, user: ConsoleUser, default_language: str) -> Session:
        now = time.monotonic()
        if len(self._by_token) >= MAX_SESSIONS:
            self._expire(now)
            while len(self._by_token) >= MAX_SESSIONS:  # oldest first (insertion order)
                self._by_token.pop(next(iter(self._by_token)))
        s = Session(
            token=secrets.token_urlsafe(32),
            user=user.name,
            role=user.role,
            language=user.language or default_language,
            csrf=secrets.token_urlsafe(32),
            expires=now + self.ttl_s,
        )
        self._by_token[s.token] = s
        return s

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        s = self._by_token.get(token)
        if s is None:
            return None
        if s.expires < time.monotonic():
            del self._by_token[token]
            return None
        return s

    def drop(self, token: str) -> None:
        self._by_token.pop(token, None)

    def _expire(self, now: float) -> None:
        for t in [t for t, s in self._by_token.items() if s.expires < now]:
            del self._by_token[t]
