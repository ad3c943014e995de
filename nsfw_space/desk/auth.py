"""Who may use the desk: moderators with a password (names and scrypt hashes in the database,
added from the command line, ``python -m nsfw_space desk add-moderator``) and, on a Hugging Face
Space with ``hf_oauth: true``, the Hugging Face users and organisations named in
``NSFW_SPACE_DESK_MODERATORS``.

A password sign-in returns a session token (random, 32 bytes); the database keeps only its
SHA-256, so a copy of the database cannot be used to sign in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from typing import Any

from sqlalchemy import Engine, delete, select

from nsfw_space.desk import store
from nsfw_space.errors import DeskError, NotSignedInError

SESSION_SECONDS = 12 * 3600.0
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")
SIGN_IN_FIRST = "Sign in as a moderator to use the review desk."
MAX_FAILURES = 5  # failed sign-ins for one name within FAILURE_WINDOW_S before it is locked
FAILURE_WINDOW_S = 900.0
_UNKNOWN = "scrypt$" + "00" * 16 + "$" + "00" * 64  # same cost for unknown names


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str) -> bool:
    try:
        kind, salt, digest = stored.split("$")
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), **SCRYPT)
    return hmac.compare_digest(candidate.hex(), digest)


class Moderators:
    """Password moderators and their sessions, in one desk database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def add(self, name: str, password: str) -> None:
        """Add a moderator, or set a new password for one. Raises DeskError for a bad name or a
        password under 8 characters."""
        if not NAME.match(name or ""):
            raise DeskError(
                "A moderator's name is 1 to 100 letters, digits, or _ . @ - (starting with a letter or digit)."
            )
        if len(password or "") < 8:
            raise DeskError("A moderator's password needs at least 8 characters.")
        with self.engine.begin() as connection:
            connection.execute(delete(store.users).where(store.users.c.name == name))
            connection.execute(
                store.users.insert().values(
                    name=name, password_hash=hash_password(password), created_at=time.time()
                )
            )

    def names(self) -> list[str]:
        with self.engine.connect() as connection:
            return list(connection.execute(select(store.users.c.name).order_by(store.users.c.name)).scalars())

    def sign_in(self, name: Any, password: Any) -> str:
        """A session token for a moderator's name and password. Raises NotSignedInError."""
        refused = NotSignedInError("That name and password do not match a moderator of this desk.")
        if not isinstance(name, str) or not isinstance(password, str) or not NAME.match(name):
            raise refused
        self._check_not_locked(name)
        with self.engine.connect() as connection:
            stored = connection.execute(
                select(store.users.c.password_hash).where(store.users.c.name == name)
            ).scalar()
        # an unknown name costs the same scrypt as a known one: the time does not tell which exist
        if not password_matches(password, stored or _UNKNOWN) or stored is None:
            self._record_failure(name)
            raise refused
        with self._lock:
            self._failures.pop(name, None)
        token = secrets.token_urlsafe(32)
        with self.engine.begin() as connection:
            connection.execute(delete(store.sessions).where(store.sessions.c.expires_at < time.time()))
            connection.execute(
                store.sessions.insert().values(
                    token_hash=_token_hash(token), user=name, expires_at=time.time() + SESSION_SECONDS
                )
            )
        return token

    def _check_not_locked(self, name: str) -> None:
        now = time.time()
        with self._lock:
            recent = [at for at in self._failures.get(name, []) if now - at < FAILURE_WINDOW_S]
            self._failures[name] = recent
        if len(recent) >= MAX_FAILURES:
            minutes = max(1, round((recent[0] + FAILURE_WINDOW_S - now) / 60))
            raise NotSignedInError(
                f"Too many failed sign-ins for this name; try again in {minutes} min (or ask for a new password)."
            )

    def _record_failure(self, name: str) -> None:
        with self._lock:
            self._failures.setdefault(name, []).append(time.time())

    def sign_out(self, token: Any) -> None:
        if isinstance(token, str) and token:
            with self.engine.begin() as connection:
                connection.execute(
                    delete(store.sessions).where(store.sessions.c.token_hash == _token_hash(token))
                )

    def moderator(self, token: Any = None) -> str:
        """The signed-in moderator's name for a session token. Raises NotSignedInError with a
        sentence for anyone else."""
        if isinstance(token, str) and token:
            with self.engine.connect() as connection:
                user = connection.execute(
                    select(store.sessions.c.user).where(
                        store.sessions.c.token_hash == _token_hash(token),
                        store.sessions.c.expires_at > time.time(),
                    )
                ).scalar()
            if user is not None:
                return str(user)
        raise NotSignedInError(SIGN_IN_FIRST)


def hub_moderator(username: Any, orgs: list[str], allowed: tuple[str, ...]) -> str | None:
    """``hf:<username>`` when a signed-in Hugging Face user, or one of their organisations, is in
    ``allowed`` (compared without case), else None."""
    if not isinstance(username, str) or not username or not allowed:
        return None
    names = {name.lower() for name in allowed}
    if username.lower() in names or any(org.lower() in names for org in orgs):
        return f"hf:{username}"
    return None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
