"""Pseudonymous user ids: a keyed hash applied where raw ids enter (the dataset build, the serving edge).

`pseudonym(key, "alice")` is "p" + 16 hex digits of HMAC-SHA256(key, "alice"):
stable for one key (histories, vocabularies and models line up across runs and
requests), not reversible without the key, and the same length whatever the
raw id. The key is the user's: the MMTOWER_PSEUDONYM_KEY environment variable
(its text), or a file (`--pseudonym-key FILE`), or, by default, a random key
created once in ~/.config/mmtower/pseudonym.key (mode 0600). It is never
written into the data, the pipeline's artifacts, the models or the logs: only
`key_id`, a hash of it, is recorded (the manifest), to rebuild when it changes.

Limits (docs/privacy.md): a pseudonym is personal data under the GDPR as long
as the key exists; whoever holds the key and a raw id can find that user's
rows. Item ids and timestamps are not hashed; user attributes are coarsened by
the dataset (e.g. MovieLens zip codes to 3 digits), not by this module.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

KEY_ENV = "MMTOWER_PSEUDONYM_KEY"
DEFAULT_KEY_FILE = os.path.join("~", ".config", "mmtower", "pseudonym.key")
PREFIX = "p"
DIGITS = 16


def load_key(path: str | None = None) -> bytes:
    """The pseudonymisation key: $MMTOWER_PSEUDONYM_KEY, else `path`, else DEFAULT_KEY_FILE (created if missing).

    Raises:
      FileNotFoundError: `path` names no file.
      ValueError: the key is shorter than 16 bytes.
    """
    if os.environ.get(KEY_ENV):
        key = os.environ[KEY_ENV].encode()
    else:
        file = os.path.expanduser(path or DEFAULT_KEY_FILE)
        if path is None and not os.path.exists(file):
            _create(file)
        with open(file, "rb") as f:
            key = f.read().strip()
    if len(key) < 16:
        raise ValueError(f"the pseudonymisation key must hold at least 16 bytes (${KEY_ENV} or the key file), got {len(key)}")
    return key


def _create(file: str) -> None:
    """A random key in `file`, readable by its owner only; an existing file (another process won the race) is kept."""
    os.makedirs(os.path.dirname(file), exist_ok=True)
    try:
        descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(descriptor, "w") as f:
        f.write(secrets.token_hex(32) + "\n")


def pseudonym(key: bytes, user_id: str) -> str:
    """The pseudonym of a raw user id ("" stays "": an empty id is refused elsewhere)."""
    if not user_id:
        return user_id
    return PREFIX + hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:DIGITS]


def is_pseudonym(value: str) -> bool:
    return len(value) == 1 + DIGITS and value.startswith(PREFIX) and all(c in "0123456789abcdef" for c in value[1:])


def digest(values: list[str]) -> str:
    """A short hash of a list of ids (e.g. the forgotten users, in a manifest: it names the set without listing it)."""
    return hashlib.sha256("\n".join(values).encode()).hexdigest()[:12]


def key_id(key: bytes) -> str:
    """A short hash naming the key (recorded in manifests to notice a new key), from which the key cannot be found."""
    return hashlib.sha256(b"mmtower key id\x00" + key).hexdigest()[:12]
