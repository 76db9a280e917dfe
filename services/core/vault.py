"""Ductile's age vault, read and written as Ductile does: one age-encrypted YAML blob holding every
secret and principal, decrypted with the identities of an age key file.

What this follows in Ductile (mattjoyce/ductile):

- Blob (`internal/vault/vault.go` `Load`/`Save`, `store.go`): the whole file is one age ciphertext
  (binary or ASCII-armored; Ductile writes armored, `internal/secrets/age.go` `Encrypt`) of a YAML
  document `{secrets: {name: {value, authorized_principals, status, pattern, roll_count, created_at,
  updated_at, revoked_at, description}}, principals: {name: {kind, status, nonce}}}`. A missing file,
  a non-age file, a decrypt failure or bad YAML are errors, never an empty vault. Every write
  re-encrypts the whole document to the recipients of the key file's identities (`keyring.go`
  `Recipients`) and replaces the file atomically: temp file in the same directory (0600), fsync,
  rename, fsync of the directory (`writeFileAtomic`).
- Key file (`internal/secrets/keyring.go` `LoadKeyringFromFile`, `age.go` `ParseIdentities`): age
  identity lines (`AGE-SECRET-KEY-1…`), `#` comments and blank lines; refused when group or others
  may read it. Only X25519 identities can yield the recipients a write needs.
- Paths (`internal/config/secrets.go` `ResolveAgeKeyPath`, `vault_secrets.go` `resolveVaultPath`): key
  = `$DUCTILE_AGE_KEY_FILE`, else `secrets.age_key_file`, else `<config dir>/age.key` or
  `~/.config/ductile/age.key` when present; vault = `secrets.vault_file`, else `<config dir>/vault.age`;
  relative paths against the root config file's directory.
- Projection (`vault_secrets.go` `activeVaultSecrets`): the secrets `secret_ref` resolves are the
  active ones, minus those granted exclusively to registered `plugin` principals (those reach their
  plugin at spawn only, `compose`).
- Reserved entities (`reserved.go`, `genesis.go`): principal `core` and secret `core-admin-token` (the
  vault admin token the management routes authenticate with, constant-time, only while active) are
  never changed through the management operations.
- Operations and their error texts: `principal.go` `RegisterPrincipal`, `secret.go` `SetSecret`
  (value is roll-only, grants are a partial update, a new manual secret needs a value),
  `lifecycle.go`/`lifecycle_owner.go` (`Roll` mints 32 random bytes, base64url, for `auto` secrets;
  `Revoke` is terminal and idempotent; `RevokePrincipal`; `PurgePrincipal` strips the grants;
  `RollPrincipal` rolls the principal's active auto secrets and names the manual ones skipped),
  `compose.go` `Compose` (unknown or inactive principal → error; revoked grants → denials).

Inferred where the stored Ductile versions disagree or were not readable: revoke clears the value
(the `vault` CLI help and `vault get` say so; the older `lifecycle.go` keeps it); roll and revoke of
`core-admin-token` are refused with the reserved text (the reserved-entity card lists the guards, not
their texts); a manual roll without a value is refused with the empty-value text.

Where Headrace differs, on purpose: several processes (API, runner) hold the vault, so a write takes
a lock file beside the vault (`.<vault file>.lock`) and starts from the file as it is on disk; a
reader calls `refresh()` to pick up another process's write. Ductile, a single process, refuses to
save over a file changed underneath it.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets as secrets_mod
import stat
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyrage
import yaml

from services.core import yamlio

KEY_ENV = "DUCTILE_AGE_KEY_FILE"
DEFAULT_VAULT_NAME = "vault.age"
DEFAULT_KEY_NAME = "age.key"

ACTIVE, REVOKED = "active", "revoked"
AUTO, MANUAL = "auto", "manual"
KINDS = ("plugin", "consumer", "gateway")
CORE_PRINCIPAL = "core"
ADMIN_TOKEN_SECRET = "core-admin-token"
#: entropy of a minted value (auto roll, genesis admin token and nonce)
MINTED_BYTES = 32

_SECRET_NAME = re.compile(r"^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$")
_PRINCIPAL_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_AGE_BINARY = b"age-encryption.org/v1"
_AGE_ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"
#: Go's struct field order, for a file that reads like one Ductile wrote
_SECRET_FIELDS = (
    "value",
    "authorized_principals",
    "status",
    "pattern",
    "roll_count",
    "created_at",
    "updated_at",
    "revoked_at",
    "description",
)
_OMIT_EMPTY = ("created_at", "updated_at", "revoked_at", "description", "nonce")


class VaultFileError(ValueError):
    """The key file or the vault file cannot be used (the message names the file, never a value)."""


class VaultError(ValueError):
    """A refused vault operation; the text is Ductile's (`vault: <reason>: <what>`)."""


# Ductile's sentinel errors (internal/vault/errors.go)
INVALID_NAME = "vault: invalid name"
INVALID_KIND = "vault: invalid principal kind"
INVALID_PATTERN = "vault: invalid secret pattern"
DUPLICATE_PRINCIPAL = "vault: principal already registered"
UNKNOWN_PRINCIPAL = "vault: unknown principal"
PRINCIPAL_INACTIVE = "vault: principal is not active"
UNKNOWN_SECRET = "vault: unknown secret"
SECRET_REVOKED = "vault: secret is revoked"
RESERVED = "vault: reserved entity cannot be mutated via the data plane"
VALUE_IMMUTABLE = "vault: secret value is immutable via set; use roll"
EMPTY_VALUE = "vault: active secret value must not be empty"


def quote(text: str) -> str:
    """Go's `%q` for the names in error texts (close enough: JSON string quoting)."""
    return json.dumps(text, ensure_ascii=False)


def refused(sentinel: str, detail: str) -> VaultError:
    return VaultError(f"{sentinel}: {detail}")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def mint() -> str:
    """A fresh value: 32 CSPRNG bytes, base64url without padding (Ductile's `GenerateToken(32)`)."""
    return base64.urlsafe_b64encode(secrets_mod.token_bytes(MINTED_BYTES)).rstrip(b"=").decode()


# --- files -----------------------------------------------------------------------------------------


def is_encrypted(data: bytes) -> bool:
    head = data.lstrip(b" \t\r\n")
    return head.startswith(_AGE_BINARY) or head.startswith(_AGE_ARMOR)


def load_identities(path: Path) -> list[pyrage.x25519.Identity]:
    """The X25519 identities of an age key file, refused when group or others may read it."""
    try:
        info = path.stat()
    except OSError as exc:
        raise VaultFileError(f"age key file {str(path)!r}: {exc.strerror or exc}") from None
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise VaultFileError(
            f"age key file {str(path)!r} has insecure permissions {mode:#o}: must not be "
            f"readable by group or others (chmod 600 {path})"
        )
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise VaultFileError(
            f"age key file {str(path)!r}: cannot read: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    identities = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except Exception:  # pyrage raises IdentityError or ValueError; never quote the line (a key)
            raise VaultFileError(
                f"age key file {str(path)!r}: line {number} is not an age X25519 identity (AGE-SECRET-KEY-1…)"
            ) from None
    if not identities:
        raise VaultFileError(f"age key file {str(path)!r}: parse identities: no identities found")
    return identities


def _parse_store(plain: bytes, path: Path) -> dict[str, Any]:
    try:
        doc = yamlio.load_plain(plain.decode())
    except (UnicodeDecodeError, yamlio.YAMLError):
        raise VaultFileError(f"vault: parse {str(path)!r}: not a YAML document") from None
    doc = {} if doc is None else doc
    if not isinstance(doc, dict):
        raise VaultFileError(f"vault: parse {str(path)!r}: the top level must be a mapping")
    store: dict[str, Any] = {}
    for section in ("secrets", "principals"):
        entries = doc.get(section) or {}
        if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
            raise VaultFileError(f"vault: parse {str(path)!r}: {section} must map names to entries")
        store[section] = {str(k): dict(v) for k, v in entries.items()}
    for entry in store["secrets"].values():
        entry["value"] = "" if entry.get("value") is None else str(entry["value"])
        entry["authorized_principals"] = [str(p) for p in entry.get("authorized_principals") or []]
    store.update({k: v for k, v in doc.items() if k not in ("secrets", "principals")})
    return store


def _dump_store(store: Mapping[str, Any]) -> bytes:
    def ordered(entry: Mapping[str, Any], first: Sequence[str]) -> dict[str, Any]:
        out = {k: entry[k] for k in first if k in entry and not (k in _OMIT_EMPTY and not entry[k])}
        out.update({k: v for k, v in entry.items() if k not in first})
        return out

    doc = {
        "secrets": {n: ordered(e, _SECRET_FIELDS) for n, e in store["secrets"].items()},
        "principals": {n: ordered(e, ("kind", "status", "nonce")) for n, e in store["principals"].items()},
    }
    doc.update({k: v for k, v in store.items() if k not in doc})
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, indent=4).encode()


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same directory (0600), fsync, rename over `path`, fsync the directory."""
    fd, tmp = tempfile.mkstemp(prefix=".vault-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    except OSError:  # a filesystem that cannot sync a directory: the file itself is synced
        pass
    finally:
        os.close(dir_fd)


def encrypt(plain: bytes, identities: Sequence[pyrage.x25519.Identity]) -> bytes:
    """ASCII-armored age ciphertext to the identities' own recipients (Ductile's self-encryption)."""
    return pyrage.encrypt(plain, [i.to_public() for i in identities], armored=True)


# --- the vault -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Composition:
    """What a principal receives at spawn, and what it was denied (`[{"secret","reason"}]`)."""

    secrets: dict[str, str]
    denials: list[dict[str, str]]


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


class Vault:
    """One vault file, decrypted in memory. Reads see the last load or `refresh()`; writes go to disk
    first (under the lock file) and replace the in-memory copy only once the file is written."""

    def __init__(
        self,
        path: Path,
        key_path: Path,
        identities: list[pyrage.x25519.Identity],
        store: dict[str, Any],
        digest: str,
        signature: tuple[int, int, int] | None,
    ) -> None:
        self.path = path
        self.key_path = key_path
        self._identities = identities
        self._store = store
        #: sha256 of the ciphertext last read or written (part of the config fingerprint)
        self.digest = digest
        self._signature = signature
        self._mutex = threading.Lock()

    def __repr__(self) -> str:  # never the store: it holds the values
        return f"Vault({str(self.path)!r})"

    @classmethod
    def load(cls, path: Path, key_path: Path) -> Vault:
        identities = load_identities(key_path)
        store, digest, signature = cls._read(path, identities)
        return cls(path, key_path, identities, store, digest, signature)

    @staticmethod
    def _read(path: Path, identities: Sequence[pyrage.x25519.Identity]) -> tuple[dict[str, Any], str, Any]:
        signature = _signature(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise VaultFileError(f"vault: read {str(path)!r}: {exc.strerror or exc}") from None
        if not is_encrypted(data):
            raise VaultFileError(f"vault: {str(path)!r} is not age-encrypted")
        try:
            plain = pyrage.decrypt(data, list(identities))
        except pyrage.DecryptError as exc:
            raise VaultFileError(f"vault: decrypt {str(path)!r}: {exc} (is it encrypted to this age key?)") from None
        return _parse_store(plain, path), hashlib.sha256(data).hexdigest(), signature

    def refresh(self) -> bool:
        """Re-read the file when another process rewrote it; True when the contents changed. A file
        that became unreadable keeps the copy in memory (the next config load reports it)."""
        if _signature(self.path) == self._signature:
            return False
        with self._mutex:
            try:
                store, digest, signature = self._read(self.path, self._identities)
            except VaultFileError:
                return False
            changed = digest != self.digest
            self._store, self.digest, self._signature = store, digest, signature
            return changed

    # --- reads ---------------------------------------------------------------------------------

    def secret_names(self) -> list[str]:
        return sorted(self._store["secrets"])

    def projected(self) -> dict[str, str]:
        """What `secret_ref` resolves: active secrets not granted exclusively to plugin principals."""
        principals = self._store["principals"]
        out = {}
        for name in self.secret_names():
            entry = self._store["secrets"][name]
            if entry.get("status") != ACTIVE:
                continue
            grants = entry["authorized_principals"]
            if grants and all((principals.get(p) or {}).get("kind") == "plugin" for p in grants):
                continue
            out[name] = entry["value"]
        return out

    def warnings(self) -> list[str]:
        """Ductile's load-time warning: a grant to an unregistered principal keeps a secret visible."""
        principals = self._store["principals"]
        out = []
        for name in self.secret_names():
            entry = self._store["secrets"][name]
            missing = [p for p in entry["authorized_principals"] if p not in principals]
            if entry.get("status") == ACTIVE and missing:
                out.append(
                    f"vault: secret {quote(name)} grants to unregistered principal {quote(missing[0])}; it "
                    "stays load-time visible to gateway consumers — register the principal or fix the grant"
                )
        return out

    def values(self) -> set[str]:
        """Every secret value (for redaction)."""
        return {e["value"] for e in self._store["secrets"].values() if e["value"]}

    def authenticate_admin(self, presented: str) -> bool:
        """Constant-time match against the active `core-admin-token` (never an empty one)."""
        entry = self._store["secrets"].get(ADMIN_TOKEN_SECRET) or {}
        active = entry.get("status") == ACTIVE and bool(entry.get("value"))
        resident = entry.get("value", "") if active else ""
        match = hmac.compare_digest(presented.encode(), resident.encode())
        return active and match

    def compose(self, principal: str) -> Composition:
        """The secrets granted to `principal` (Ductile's `Compose`); VaultError when unknown or inactive."""
        entry = self._store["principals"].get(principal)
        if entry is None:
            raise refused(UNKNOWN_PRINCIPAL, quote(principal))
        if entry.get("status") != ACTIVE:
            raise refused(PRINCIPAL_INACTIVE, f"{quote(principal)} is {entry.get('status')}")
        granted, denials = {}, []
        for name in self.secret_names():
            secret = self._store["secrets"][name]
            if principal not in secret["authorized_principals"]:
                continue
            if secret.get("status") == ACTIVE:
                granted[name] = secret["value"]
            else:
                denials.append({"secret": name, "reason": "secret_revoked"})
        return Composition(secrets=granted, denials=denials)

    def has_principal(self, name: str) -> bool:
        return name in self._store["principals"]

    # --- writes --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[dict[str, Any]]:
        """A copy of the store as on disk now, to change; written (encrypted, atomically) when the
        block ends without error, and only then made the copy in memory."""
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        with self._mutex, open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _signature(self.path) != self._signature:
                self._store, self.digest, self._signature = self._read(self.path, self._identities)
            store = copy.deepcopy(self._store)
            yield store
            if store == self._store:
                return
            data = encrypt(_dump_store(store), self._identities)
            write_atomic(self.path, data)
            self._store, self.digest, self._signature = store, hashlib.sha256(data).hexdigest(), _signature(self.path)

    def register_principal(self, name: str, kind: str) -> None:
        with self._writing() as store:
            if name == CORE_PRINCIPAL:
                raise refused(RESERVED, f"principal {quote(name)}")
            if not _PRINCIPAL_NAME.match(name):
                raise refused(INVALID_NAME, f"principal {quote(name)} must be kebab-case")
            if kind not in KINDS:
                raise refused(INVALID_KIND, quote(kind))
            if name in store["principals"]:
                raise refused(DUPLICATE_PRINCIPAL, quote(name))
            store["principals"][name] = {"kind": kind, "status": ACTIVE}

    def set_secret(self, name: str, value: str, principals: list[str] | None, pattern: str) -> None:
        """Create, or update an active secret: `principals` None keeps the grants, a list replaces them;
        a different `value` on update is refused (roll is the only way to change a value)."""
        with self._writing() as store:
            if not _SECRET_NAME.match(name):
                raise refused(INVALID_NAME, f"secret {quote(name)}")
            if name == ADMIN_TOKEN_SECRET:
                raise refused(RESERVED, f"secret {quote(name)} (use RotateAdminToken)")
            if pattern and pattern not in (AUTO, MANUAL):
                raise refused(INVALID_PATTERN, quote(pattern))
            for principal in principals or ():
                if principal not in store["principals"]:
                    raise refused(UNKNOWN_PRINCIPAL, f"secret {quote(name)} authorizes {quote(principal)}")
            now = _now()
            existing = store["secrets"].get(name)
            if existing is not None:
                if existing.get("status") == REVOKED:
                    raise refused(SECRET_REVOKED, quote(name))
                if value and value != existing["value"]:
                    raise refused(VALUE_IMMUTABLE, f"secret {quote(name)}")
                if principals is not None:
                    existing["authorized_principals"] = list(principals)
                if pattern:
                    existing["pattern"] = pattern
                existing["updated_at"] = now
                return
            pattern = pattern or MANUAL
            if not value and pattern != AUTO:
                raise refused(EMPTY_VALUE, f"secret {quote(name)}")
            store["secrets"][name] = {
                "value": value,
                "authorized_principals": list(principals or ()),
                "status": ACTIVE,
                "pattern": pattern,
                "roll_count": 0,
                "created_at": now,
                "updated_at": now,
            }

    @staticmethod
    def _operable(store: dict[str, Any], name: str) -> dict[str, Any]:
        """The stored secret an operator may roll or revoke: it exists and is not the reserved admin token."""
        entry: dict[str, Any] | None = store["secrets"].get(name)
        if entry is None:
            raise refused(UNKNOWN_SECRET, quote(name))
        if name == ADMIN_TOKEN_SECRET:
            raise refused(RESERVED, f"secret {quote(name)}")
        return entry

    @classmethod
    def _roll_one(cls, store: dict[str, Any], name: str, value: str) -> None:
        entry = cls._operable(store, name)
        if entry.get("status") == REVOKED:
            raise refused(SECRET_REVOKED, quote(name))
        if entry.get("pattern") == AUTO:
            value = mint()
        elif not value:
            raise refused(EMPTY_VALUE, f"secret {quote(name)}")
        entry["value"] = value
        entry["roll_count"] = int(entry.get("roll_count") or 0) + 1
        entry["updated_at"] = _now()

    def roll(self, name: str, value: str) -> None:
        """A new value: minted for an `auto` secret (`value` ignored), the operator's for a manual one."""
        with self._writing() as store:
            self._roll_one(store, name, value)

    def revoke(self, name: str) -> None:
        """Terminal and idempotent; the value is cleared."""
        with self._writing() as store:
            entry = self._operable(store, name)
            if entry.get("status") == REVOKED:
                return
            entry.update(status=REVOKED, value="", revoked_at=_now())

    def revoke_principal(self, name: str) -> None:
        with self._writing() as store:
            if name == CORE_PRINCIPAL:
                raise refused(RESERVED, f"principal {quote(name)}")
            entry = store["principals"].get(name)
            if entry is None:
                raise refused(UNKNOWN_PRINCIPAL, quote(name))
            entry["status"] = REVOKED

    def purge_principal(self, name: str) -> None:
        with self._writing() as store:
            if name == CORE_PRINCIPAL:
                raise refused(RESERVED, f"principal {quote(name)}")
            if name not in store["principals"]:
                raise refused(UNKNOWN_PRINCIPAL, quote(name))
            del store["principals"][name]
            for entry in store["secrets"].values():
                entry["authorized_principals"] = [p for p in entry["authorized_principals"] if p != name]

    def roll_principal(self, name: str) -> tuple[list[str], list[str]]:
        """Roll every active auto secret granted to `name` in one write; manual ones are skipped."""
        rolled: list[str] = []
        skipped: list[str] = []
        with self._writing() as store:
            if name not in store["principals"]:
                raise refused(UNKNOWN_PRINCIPAL, quote(name))
            for secret in sorted(store["secrets"]):
                entry = store["secrets"][secret]
                if name not in entry["authorized_principals"] or entry.get("status") == REVOKED:
                    continue
                if entry.get("pattern") != AUTO:
                    skipped.append(secret)
                    continue
                self._roll_one(store, secret, "")
                rolled.append(secret)
        return rolled, skipped


PRINCIPAL_REQUIRED = "vault: plugin requires vault secrets but its principal is unknown/unregistered"


def plugin_secrets(vault: Vault | None, plugin: str, principal: str, *, requires_vault: bool) -> dict[str, str]:
    """The vault secrets a plugin's request carries (Ductile's `dispatch.composePluginSecrets`): none
    when there is no vault or the principal is not registered, unless the plugin `requires_vault`
    (then VaultError); VaultError for a revoked principal. The file is re-read first when another
    process changed it, so a secret rolled through the API reaches the next job."""
    if vault is None:
        if requires_vault:
            raise VaultError(f"{PRINCIPAL_REQUIRED}: {quote(plugin)} (principal {quote(principal)}, no vault wired)")
        return {}
    vault.refresh()
    if not vault.has_principal(principal):
        if requires_vault:
            raise VaultError(f"{PRINCIPAL_REQUIRED}: plugin {quote(plugin)} → principal {quote(principal)}")
        return {}
    return vault.compose(principal).secrets


def keygen(path: Path) -> None:
    """A new age key file (0600), as `age-keygen` writes one (Ductile's `secrets keygen`)."""
    identity = pyrage.x25519.Identity.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"# created: {_now()}\n# public key: {identity.to_public()}\n{identity}\n")


def init(path: Path, key_path: Path) -> str:
    """A new vault (Ductile's genesis, `vault init`): the `core` principal with a fresh nonce and a
    minted `core-admin-token`; returns the admin token (shown once). Refuses an existing file."""
    if path.exists():
        raise VaultFileError(f"vault: refusing to init — {str(path)!r} already exists")
    identities = load_identities(key_path)
    now = _now()
    store: dict[str, Any] = {
        "secrets": {
            ADMIN_TOKEN_SECRET: {
                "value": mint(),
                "authorized_principals": [],
                "status": ACTIVE,
                "pattern": AUTO,
                "roll_count": 0,
                "created_at": now,
                "updated_at": now,
            }
        },
        "principals": {CORE_PRINCIPAL: {"kind": "gateway", "status": ACTIVE, "nonce": mint()}},
    }
    write_atomic(path, encrypt(_dump_store(store), identities))
    return str(store["secrets"][ADMIN_TOKEN_SECRET]["value"])


# --- where the files are ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Location:
    """The vault and key files a config names (or Ductile's defaults), and whether they were named."""

    vault: Path
    key: Path | None
    vault_named: bool
    key_named: bool


def locate(settings: Mapping[str, str], config_dir: Path, env: Mapping[str, str]) -> Location:
    """Ductile's resolution: key from $DUCTILE_AGE_KEY_FILE, `secrets.age_key_file`, then the default
    files that exist; vault from `secrets.vault_file`, else `<config dir>/vault.age`."""

    def under(value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else config_dir / path

    key: Path | None = None
    key_named = True
    if env.get(KEY_ENV):
        key = under(env[KEY_ENV])
    elif settings.get("age_key_file"):
        key = under(settings["age_key_file"])
    else:
        key_named = False
        home = env.get("HOME")
        candidates = [config_dir / DEFAULT_KEY_NAME]
        if home:
            candidates.append(Path(home) / ".config" / "ductile" / DEFAULT_KEY_NAME)
        key = next((c for c in candidates if c.is_file()), None)
    named = bool(settings.get("vault_file"))
    vault = under(settings["vault_file"]) if named else config_dir / DEFAULT_VAULT_NAME
    return Location(vault=vault.resolve(), key=key.resolve() if key else None, vault_named=named, key_named=key_named)


def open_configured(
    settings: Mapping[str, str], config_dir: Path, env: Mapping[str, str]
) -> tuple[Vault | None, list[str]]:
    """The config's vault, or None when it has none; VaultFileError (naming the file) when the files the
    config names cannot be used. Returns warnings too (a default vault.age without a key is skipped)."""
    where = locate(settings, config_dir, env)
    named = where.vault_named or bool(settings.get("age_key_file"))
    if not where.vault.exists():
        if named:
            raise VaultFileError(
                f"vault: read {str(where.vault)!r}: no such file (secrets.vault_file; create it "
                "with `headrace vault-init` or copy the Ductile vault there)"
            )
        return None, []
    if where.key is None:
        if named:
            raise VaultFileError(f"vault {str(where.vault)!r}: no age key file (set secrets.age_key_file or {KEY_ENV})")
        return None, [
            f"vault: {where.vault} is present but no age key file was found (set secrets.age_key_file "
            f"or {KEY_ENV}): the vault is not read"
        ]
    vault = Vault.load(where.vault, where.key)
    return vault, vault.warnings()
