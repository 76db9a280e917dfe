"""Ductile vaults made in a test with pyrage, the way Ductile writes them (an age key file, and an
ASCII-armored age blob of the YAML store), never through Headrace's own writer: a test that reads one
back with Headrace checks Headrace against the format, not against itself."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyrage
import yaml

ADMIN_TOKEN = "admin-token-for-tests-0123456789abcdef"


@dataclasses.dataclass(slots=True)
class MadeVault:
    key: Path
    vault: Path
    identity: Any

    def read(self) -> dict[str, Any]:
        """The store as on disk now, decrypted with the key (pyrage, not Headrace)."""
        return yaml.safe_load(pyrage.decrypt(self.vault.read_bytes(), [self.identity]))


def secret(value: str, *principals: str, status: str = "active", pattern: str = "manual") -> dict[str, Any]:
    return {
        "value": value,
        "authorized_principals": list(principals),
        "status": status,
        "pattern": pattern,
        "roll_count": 0,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }


def make(
    directory: Path,
    *,
    secrets: dict[str, dict[str, Any]] | None = None,
    principals: dict[str, str] | None = None,
    key_name: str = "age.key",
    vault_name: str = "vault.age",
    armored: bool = True,
    admin_token: str | None = ADMIN_TOKEN,
) -> MadeVault:
    """A key file (0600) and a vault in `directory`: the genesis entries (`core`, `core-admin-token`)
    plus `secrets` and `principals` (name → kind)."""
    directory.mkdir(parents=True, exist_ok=True)
    identity = pyrage.x25519.Identity.generate()
    key = directory / key_name
    key.write_text(f"# created: 2026-01-01T00:00:00Z\n# public key: {identity.to_public()}\n{identity}\n")
    key.chmod(0o600)
    store: dict[str, Any] = {
        "secrets": {},
        "principals": {"core": {"kind": "gateway", "status": "active", "nonce": "genesis-nonce"}},
    }
    if admin_token is not None:
        store["secrets"]["core-admin-token"] = secret(admin_token, pattern="auto")
    store["secrets"].update(secrets or {})
    for name, kind in (principals or {}).items():
        store["principals"][name] = {"kind": kind, "status": "active"}
    vault = directory / vault_name
    vault.write_bytes(pyrage.encrypt(yaml.safe_dump(store).encode(), [identity.to_public()], armored=armored))
    vault.chmod(0o600)
    return MadeVault(key=key, vault=vault, identity=identity)
