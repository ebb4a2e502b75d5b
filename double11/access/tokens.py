"""The festival's signing key and its tokens.

A token is a JWT signed with HMAC-SHA256 (PyJWT) by the festival's key:
claims `role`, `sub` (the buyer's or merchant's id, "0" for the others),
`iat` and `exp`, and the key's id (`kid`) in its header, so that after a
rotation tokens of the previous key stay valid until they expire.  Times are
the wall clock's, not the festival clock's: a token's life is real time.

The key lives in the data folder (`access.key`, created on the first start,
readable by its owner only) or in a file named with `--token-key`.
Verifying a JWT costs tens of microseconds, more than the rest of a single
request; a phone sends many requests with one token, so a verified token is
remembered (until it expires) and the next request costs a dict lookup.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import time
from pathlib import Path

import jwt

from double11 import limits
from double11.access.roles import ROLE_NAMES, WITH_ID, Principal, Role, a_token_of
from double11.errors import Double11Error, Result

KEY_FILE = "access.key"
PREVIOUS_KEY_FILE = "access.key.previous"  # after a rotation: still accepted
_KEY_BYTES = 32
_ALGORITHM = "HS256"


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def key_path(data_dir: str | Path, key_file: str | Path | None = None) -> Path:
    return Path(key_file) if key_file is not None else Path(data_dir) / KEY_FILE


def load_or_create_key(path: Path) -> bytes:
    """The key at `path`, made (random, owner-only) when there is none."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(_KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.hex().encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return key


def _read_key(path: Path) -> bytes:
    text = path.read_bytes().strip()
    try:
        key = bytes.fromhex(text.decode())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) < _KEY_BYTES:
        raise ValueError(f"{path} is not a festival key ({_KEY_BYTES} bytes in hex)")
    return key


def rotate(path: Path) -> tuple[str, str]:
    """A new key at `path`; the old one moves beside it as the previous key
    (tokens it signed keep working until they expire, once the server
    restarts).  Returns (old key id, new key id)."""
    old = _read_key(path)
    os.replace(path, path.with_name(path.name + ".previous"))
    new = load_or_create_key(path)
    return key_id(old), key_id(new)


def keys_at(path: Path) -> list[bytes]:
    """The key, and the previous one where a rotation left it."""
    keys = [load_or_create_key(path)]
    previous = path.with_name(path.name + ".previous")
    if previous.exists():
        keys.append(_read_key(previous))
    return keys


_TTL = re.compile(r"^(\d+)([smhd]?)$")
_TTL_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl_s(text: str) -> int:
    """'90', '45s', '30m', '1h', '7d' as seconds; ValueError otherwise."""
    m = _TTL.match(text.strip())
    if m is None or int(m.group(1)) == 0:
        raise ValueError(f"--ttl must be a positive number of seconds, or one with s, m, h or d after it, "
                         f"got {text!r}")
    seconds = int(m.group(1)) * _TTL_UNIT_S[m.group(2)]
    if seconds > limits.token_ttl_s_max:
        raise ValueError(f"--ttl must be at most {limits.token_ttl_s_max // 86400} days, got {text!r}")
    return seconds


def issue(key: bytes, role: Role, id_: int = 0, ttl_s: int = 3600, now_s: float | None = None) -> str:
    """A token for `role` acting as `id_` (a buyer's or merchant's; 0 for the others)."""
    if (role in WITH_ID) != (id_ > 0):
        raise ValueError(f"{a_token_of(role)} needs --id (a positive id)" if role in WITH_ID
                         else f"{a_token_of(role)} acts for everyone: no --id")
    if not 0 <= id_ <= limits.id_max:
        raise ValueError(f"--id must be 1..{limits.id_max}, got {id_}")
    now = int(time.time() if now_s is None else now_s)
    claims = {"role": role.name, "sub": str(id_), "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, key, algorithm=_ALGORITHM, headers={"kid": key_id(key)})


def issue_in(data_dir: str | Path, role: Role, id_: int = 0, ttl_s: int = 3600,
             key_file: str | Path | None = None) -> str:
    """A token from the key of the festival in `data_dir` (made if there is
    none yet): the Python API's `double11 tokens issue`."""
    return issue(load_or_create_key(key_path(data_dir, key_file)), role, id_, ttl_s)


def _refused(why: str) -> Double11Error:
    return Double11Error(Result.unauthenticated, message=why)


class Verifier:
    """Turns an Authorization header into the Principal it proves, or
    raises unauthenticated (401) saying why."""

    def __init__(self, keys: list[bytes]) -> None:
        self._keys = {key_id(k): k for k in keys}
        self._known: dict[str, tuple[Principal, float]] = {}  # token -> (principal, exp)

    def principal(self, header: str | None) -> Principal:
        if header is None:
            raise _refused("the request has no Authorization header: send 'Authorization: Bearer <token>'")
        known = self._known.get(header)
        if known is not None:
            if known[1] > time.time():
                return known[0]
            del self._known[header]
            raise _refused("the token has expired")
        principal, exp = self._verify(header)
        known_max = limits.token_cache_entries_max
        if len(self._known) >= known_max:  # the oldest quarter goes: a phone's next request verifies again
            for old in list(itertools.islice(self._known, known_max // 4)):
                del self._known[old]
        self._known[header] = (principal, exp)
        return principal

    def _verify(self, header: str) -> tuple[Principal, float]:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _refused("the Authorization header must be 'Bearer <token>'")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise _refused("the token is not a well-formed JWT") from None
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise _refused("the token was not signed by this festival's key")
        try:
            claims = jwt.decode(token, key, algorithms=[_ALGORITHM], options={"require": ["exp", "role", "sub"]})
        except jwt.ExpiredSignatureError:
            raise _refused("the token has expired") from None
        except jwt.InvalidSignatureError:
            raise _refused("the token's signature does not match this festival's key") from None
        except jwt.PyJWTError as e:
            raise _refused(f"the token is not valid: {e}") from None
        role = ROLE_NAMES.get(claims["role"]) if isinstance(claims["role"], str) else None
        sub = claims["sub"]
        if role is None or not isinstance(sub, str) or not sub.isdigit():
            raise _refused("the token's role or subject is not one this festival issues")
        id_ = int(sub)
        if (role in WITH_ID) != (id_ > 0):
            raise _refused("the token's subject does not fit its role")
        return Principal(role, id_), float(claims["exp"])
