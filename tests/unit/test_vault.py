"""services/core/vault.py against vaults made with pyrage in the test (tests/support/vaults.py): the key
file and blob are read as Ductile writes them, writes re-encrypt to the same key atomically, and the
operations keep Ductile's rules and error texts."""

from __future__ import annotations

from pathlib import Path

import pyrage
import pytest

from services.core import vault as vault_mod
from tests.support import vaults
from tests.support.vaults import secret


def load(made: vaults.MadeVault) -> vault_mod.Vault:
    return vault_mod.Vault.load(made.vault, made.key)


def test_an_armored_or_binary_vault_decrypts_and_projects_its_gateway_secrets(tmp_path: Path) -> None:
    for armored in (True, False):
        made = vaults.make(
            tmp_path / str(armored),
            armored=armored,
            principals={"mailer": "plugin", "app": "consumer"},
            secrets={
                "api-token": secret("tok-1234567890"),
                "old": secret("gone-value", status="revoked"),
                "smtp_pass": secret("plugin-only-value", "mailer"),
                "shared": secret("shared-value", "mailer", "app"),
                "typo": secret("typo-value", "nobody"),
            },
        )
        v = load(made)
        # active, not granted exclusively to plugins; a grant to an unregistered principal stays visible
        assert v.projected() == {
            "api-token": "tok-1234567890",
            "core-admin-token": vaults.ADMIN_TOKEN,
            "shared": "shared-value",
            "typo": "typo-value",
        }
        assert [w for w in v.warnings() if '"typo"' in w and '"nobody"' in w]


def test_compose_gives_a_principal_its_grants_and_names_the_revoked_ones(tmp_path: Path) -> None:
    made = vaults.make(
        tmp_path,
        principals={"mailer": "plugin", "other": "plugin"},
        secrets={
            "a": secret("value-a", "mailer"),
            "b": secret("", "mailer", status="revoked"),
            "c": secret("value-c", "other"),
        },
    )
    v = load(made)
    composed = v.compose("mailer")
    assert composed.secrets == {"a": "value-a"} and composed.denials == [{"secret": "b", "reason": "secret_revoked"}]
    with pytest.raises(vault_mod.VaultError, match=r'^vault: unknown principal: "ghost"$'):
        v.compose("ghost")
    assert vault_mod.plugin_secrets(v, "ghost", "ghost", requires_vault=False) == {}
    with pytest.raises(vault_mod.VaultError, match="requires vault secrets but its principal is unknown"):
        vault_mod.plugin_secrets(v, "ghost_plugin", "ghost", requires_vault=True)
    with pytest.raises(vault_mod.VaultError, match="no vault wired"):
        vault_mod.plugin_secrets(None, "mailer", "mailer", requires_vault=True)
    v.revoke_principal("mailer")
    with pytest.raises(vault_mod.VaultError, match=r'^vault: principal is not active: "mailer" is revoked$'):
        vault_mod.plugin_secrets(v, "mailer", "mailer", requires_vault=False)


def test_the_admin_token_authenticates_only_while_active(tmp_path: Path) -> None:
    v = load(vaults.make(tmp_path))
    assert v.authenticate_admin(vaults.ADMIN_TOKEN)
    assert not v.authenticate_admin(vaults.ADMIN_TOKEN + "x") and not v.authenticate_admin("")
    no_admin = load(vaults.make(tmp_path / "none", admin_token=None))
    assert not no_admin.authenticate_admin("")


def test_a_write_re_encrypts_to_the_same_key_atomically_and_keeps_unknown_fields(tmp_path: Path) -> None:
    made = vaults.make(tmp_path, principals={"mailer": "plugin"})
    v = load(made)
    before = made.vault.read_bytes()
    v.set_secret("smtp_pass", "hunter2-hunter2", ["mailer"], "manual")
    after = made.vault.read_bytes()
    assert after != before and after.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    store = made.read()  # decrypts with the original identity: same recipient
    assert store["secrets"]["smtp_pass"]["value"] == "hunter2-hunter2"
    assert store["secrets"]["smtp_pass"]["authorized_principals"] == ["mailer"]
    assert store["principals"]["core"]["nonce"] == "genesis-nonce"  # a field Headrace does not model survives
    assert made.vault.stat().st_mode & 0o777 == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".vault-")]  # no temp file left
    assert b"hunter2" not in after


def test_another_process_write_is_picked_up_and_written_over_not_lost(tmp_path: Path) -> None:
    made = vaults.make(tmp_path)
    api, runner = load(made), load(made)
    api.register_principal("mailer", "plugin")
    api.set_secret("k", "value-one-1", ["mailer"], "manual")
    assert runner.refresh() is True and runner.compose("mailer").secrets == {"k": "value-one-1"}
    runner.register_principal("second", "consumer")  # starts from the file, so the first write stays
    api.refresh()
    store = made.read()
    assert {"mailer", "second"} <= set(store["principals"]) and "k" in store["secrets"]
    assert runner.refresh() is False


def test_set_is_an_upsert_whose_value_only_roll_changes(tmp_path: Path) -> None:
    v = load(vaults.make(tmp_path, principals={"mailer": "plugin"}))
    v.set_secret("k", "first-value", ["mailer"], "manual")
    with pytest.raises(vault_mod.VaultError, match=r'^vault: secret value is immutable via set; use roll: secret "k"$'):
        v.set_secret("k", "other-value", None, "manual")
    v.set_secret("k", "", None, "manual")  # no value, no grants: the grants stay
    assert v.compose("mailer").secrets == {"k": "first-value"}
    v.set_secret("k", "", [], "manual")  # an empty list clears them
    assert v.compose("mailer").secrets == {}
    with pytest.raises(vault_mod.VaultError, match=r'^vault: active secret value must not be empty: secret "new"$'):
        v.set_secret("new", "", None, "manual")
    v.set_secret("minted", "", None, "auto")  # auto secrets are minted by roll


@pytest.mark.parametrize(
    ("call", "text"),
    [
        (lambda v: v.set_secret("Bad Name", "x", None, "manual"), 'vault: invalid name: secret "Bad Name"'),
        (
            lambda v: v.set_secret("core-admin-token", "x", None, "manual"),
            'vault: reserved entity cannot be mutated via the data plane: secret "core-admin-token" (use RotateAdminToken)',
        ),
        (lambda v: v.set_secret("k", "x", None, "weird"), 'vault: invalid secret pattern: "weird"'),
        (
            lambda v: v.set_secret("k", "x", ["ghost"], "manual"),
            'vault: unknown principal: secret "k" authorizes "ghost"',
        ),
        (
            lambda v: v.register_principal("snake_case", "plugin"),
            'vault: invalid name: principal "snake_case" must be kebab-case',
        ),
        (
            lambda v: v.register_principal("core", "gateway"),
            'vault: reserved entity cannot be mutated via the data plane: principal "core"',
        ),
        (lambda v: v.register_principal("x", "robot"), 'vault: invalid principal kind: "robot"'),
        (lambda v: v.roll("nope", "v"), 'vault: unknown secret: "nope"'),
        (lambda v: v.revoke("nope"), 'vault: unknown secret: "nope"'),
        (lambda v: v.revoke_principal("nope"), 'vault: unknown principal: "nope"'),
        (
            lambda v: v.purge_principal("core"),
            'vault: reserved entity cannot be mutated via the data plane: principal "core"',
        ),
        (lambda v: v.roll_principal("nope"), 'vault: unknown principal: "nope"'),
    ],
)
def test_refused_operations_say_what_ductile_says_and_change_nothing(tmp_path: Path, call, text: str) -> None:
    made = vaults.make(tmp_path)
    v = load(made)
    before = made.vault.read_bytes()
    with pytest.raises(vault_mod.VaultError) as info:
        call(v)
    assert str(info.value) == text
    assert made.vault.read_bytes() == before


def test_roll_revoke_and_principal_lifecycle(tmp_path: Path) -> None:
    made = vaults.make(
        tmp_path,
        principals={"mailer": "plugin"},
        secrets={"manual": secret("manual-value", "mailer"), "auto": secret("auto-value", "mailer", pattern="auto")},
    )
    v = load(made)
    v.roll("manual", "manual-value-2")
    v.roll("auto", "ignored-for-auto")
    store = made.read()
    assert store["secrets"]["manual"]["value"] == "manual-value-2" and store["secrets"]["manual"]["roll_count"] == 1
    minted = store["secrets"]["auto"]["value"]
    assert minted not in ("auto-value", "ignored-for-auto") and len(minted) == 43  # 32 bytes, base64url
    assert v.roll_principal("mailer") == (["auto"], ["manual"])
    v.revoke("manual")
    v.revoke("manual")  # idempotent
    assert made.read()["secrets"]["manual"]["status"] == "revoked" and made.read()["secrets"]["manual"]["value"] == ""
    with pytest.raises(vault_mod.VaultError, match=r'^vault: secret is revoked: "manual"$'):
        v.roll("manual", "again-value")
    v.purge_principal("mailer")
    store = made.read()
    assert "mailer" not in store["principals"] and store["secrets"]["auto"]["authorized_principals"] == []


def test_a_key_file_others_may_read_or_that_holds_no_identity_is_refused(tmp_path: Path) -> None:
    made = vaults.make(tmp_path)
    made.key.chmod(0o644)
    with pytest.raises(vault_mod.VaultFileError, match=r"insecure permissions 0o644.*chmod 600"):
        load(made)
    made.key.write_text("# only a comment\n")
    made.key.chmod(0o600)
    with pytest.raises(vault_mod.VaultFileError, match="no identities found"):
        load(made)
    made.key.write_text("AGE-SECRET-KEY-NOT-REALLY\n")
    with pytest.raises(vault_mod.VaultFileError) as info:
        load(made)
    assert "NOT-REALLY" not in str(info.value) and str(made.key) in str(info.value)


def test_a_vault_for_another_key_or_not_age_names_the_file(tmp_path: Path) -> None:
    made = vaults.make(tmp_path / "a")
    other = vaults.make(tmp_path / "b")
    with pytest.raises(vault_mod.VaultFileError, match=r"vault: decrypt '.*/a/vault.age'"):
        vault_mod.Vault.load(made.vault, other.key)
    made.vault.write_text("secrets: {}\n")
    with pytest.raises(vault_mod.VaultFileError, match="is not age-encrypted"):
        load(made)
    made.vault.write_bytes(pyrage.encrypt(b"- a list\n", [made.identity.to_public()]))
    with pytest.raises(vault_mod.VaultFileError, match="the top level must be a mapping"):
        load(made)


def test_ductile_paths_key_env_first_then_config_then_default_files(tmp_path: Path) -> None:
    where = vault_mod.locate({"age_key_file": "keys/age.key", "vault_file": "v.age"}, tmp_path, {})
    assert where.key == tmp_path / "keys" / "age.key" and where.vault == tmp_path / "v.age"
    where = vault_mod.locate({"age_key_file": "keys/age.key"}, tmp_path, {"DUCTILE_AGE_KEY_FILE": "/etc/k"})
    assert where.key == Path("/etc/k") and where.vault == tmp_path / "vault.age"
    assert vault_mod.locate({}, tmp_path, {"HOME": str(tmp_path / "home")}).key is None
    (tmp_path / "home" / ".config" / "ductile").mkdir(parents=True)
    (tmp_path / "home" / ".config" / "ductile" / "age.key").write_text("")
    assert vault_mod.locate({}, tmp_path, {"HOME": str(tmp_path / "home")}).key == (
        tmp_path / "home" / ".config" / "ductile" / "age.key"
    )


def test_init_makes_a_vault_ductile_can_read(tmp_path: Path) -> None:
    made = vaults.make(tmp_path / "k")
    path = tmp_path / "new.age"
    token = vault_mod.init(path, made.key)
    store = vaults.MadeVault(key=made.key, vault=path, identity=made.identity).read()
    assert (
        store["secrets"]["core-admin-token"]["value"] == token
        and store["secrets"]["core-admin-token"]["pattern"] == "auto"
    )
    assert store["principals"]["core"]["kind"] == "gateway" and store["principals"]["core"]["nonce"]
    with pytest.raises(vault_mod.VaultFileError, match="refusing to init"):
        vault_mod.init(path, made.key)
