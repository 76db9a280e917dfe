"""Ductile's age vault (shared/spec/ductile-conformance.md §2.20, §5.3, §5.4, §5.5, §6.3) with a
vault made in the test by pyrage (tests/support/vaults.py): `secret_ref` resolves from it, the seven
/vault/* routes change it over HTTP with Ductile's auth, bodies, replies and error texts, a plugin
whose principal holds grants receives them in the request, and the real fixture config loads with a
vault beside it. One test per documented behaviour."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest

from services.core import config as config_mod
from services.core import errors
from tests.support import vaults
from tests.support.stack import REPO, TOKENS, Stack
from tests.support.vaults import secret

FIXTURE = Path("/work/shared/fixtures/ductile/configs/test/fixtures/docker/vault-secret-delivery/config")
if not FIXTURE.is_dir():  # pragma: no cover - the fixtures live beside the repository
    FIXTURE = REPO.parent / "shared/fixtures/ductile/configs/test/fixtures/docker/vault-secret-delivery/config"

ADMIN = {"Authorization": f"Bearer {vaults.ADMIN_TOKEN}"}

#: like the fixture's secret-probe: reports the secrets it was given, as names and sha256 (never values)
PROBE_MANIFEST = """manifest_spec: ductile.plugin
manifest_version: 1
name: {name}
version: 0.1.0
protocol: 2
entrypoint: run.py
concurrency_safe: true
commands:
  - {{name: poll, type: write}}
"""
PROBE_RUN = """#!/usr/bin/env python3
import hashlib, json, sys
request = json.load(sys.stdin)
secrets = request.get("secrets") or {}
digests = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in secrets.items()}
json.dump({"status": "ok", "result": {"secrets": digests}, "logs": []}, sys.stdout)
"""


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def probe_root(base: Path, *names: str) -> Path:
    root = base / "probe-plugins"
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "manifest.yaml").write_text(PROBE_MANIFEST.format(name=name))
        run = root / name / "run.py"
        run.write_text(PROBE_RUN)
        run.chmod(run.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return root


def settings(made: vaults.MadeVault) -> dict[str, str]:
    return {"age_key_file": str(made.key), "vault_file": str(made.vault)}


async def last_event(nats_url: str, subject: str) -> dict[str, Any]:
    nc = await nats.connect(nats_url)
    try:
        msg = await nc.jetstream().get_last_msg("EVENTS", subject)
        return orjson.loads(msg.data)
    finally:
        await nc.close()


@pytest.fixture
async def vault_stack(tmp_path: Path, make_config: Any, start_stack: Any) -> tuple[Stack, vaults.MadeVault]:
    made = vaults.make(
        tmp_path / "vault",
        principals={"mailer": "plugin"},
        secrets={"smtp_pass": secret("smtp-secret-value", "mailer")},
    )
    return await start_stack(make_config(secrets=settings(made))), made


async def test_without_a_vault_the_vault_routes_are_unknown(hr: Stack) -> None:
    for path in ("/vault/principal", "/vault/secret", "/vault/principal/roll"):
        status, _ = await hr.client.post(path, json={"name": "x"}, token=None, headers=ADMIN)
        assert status == 404, path


async def test_the_vault_routes_take_the_vault_admin_token_only(vault_stack: tuple[Stack, vaults.MadeVault]) -> None:
    hr, made = vault_stack
    body = {"name": "new-one", "kind": "plugin"}
    cases = [
        ({}, "missing or invalid Authorization header"),
        ({"Authorization": "Token abc"}, "invalid Authorization header format"),
        ({"Authorization": "Bearer"}, "invalid Authorization header format"),  # `Bearer ` with its space, exactly
        ({"Authorization": f"Bearer {TOKENS['admin'][0]}"}, "invalid vault admin token"),  # an API token
        ({"Authorization": "Bearer not-the-admin-token"}, "invalid vault admin token"),
    ]
    before = made.vault.read_bytes()
    for headers, text in cases:
        status, reply = await hr.client.post("/vault/principal", json=body, token=None, headers=headers)
        assert (status, reply) == (401, {"error": text}), headers
    assert made.vault.read_bytes() == before
    assert await hr.client.post("/vault/principal", json=body, token=None, headers=ADMIN) == (
        200,
        {"name": "new-one", "status": "principal_registered"},
    )


async def test_each_route_answers_as_ductile_and_records_an_audit_event(
    vault_stack: tuple[Stack, vaults.MadeVault], nats_url: str
) -> None:
    hr, made = vault_stack
    steps: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
        (
            "/vault/principal",
            {"name": "reporter", "kind": "consumer"},
            {"name": "reporter", "status": "principal_registered"},
            {"op": "register", "principal": "reporter"},
        ),
        (
            "/vault/secret",
            {"name": "api_key", "value": "api-key-value-1", "authorized_principals": ["mailer"]},
            {"name": "api_key", "status": "set"},
            {"op": "set", "secret_name": "api_key", "detail": "pattern=manual"},
        ),
        (
            "/vault/secret",
            {"name": "minted", "value": "", "pattern": "auto", "authorized_principals": ["mailer"]},
            {"name": "minted", "status": "set"},
            {"op": "set", "secret_name": "minted", "detail": "pattern=auto"},
        ),
        (
            "/vault/secret/roll",
            {"name": "api_key", "value": "api-key-value-2"},
            {"name": "api_key", "status": "rolled"},
            {"op": "roll", "secret_name": "api_key"},
        ),
        (
            "/vault/principal/roll",
            {"name": "mailer"},
            {"name": "mailer", "rolled": ["minted"], "skipped": ["api_key", "smtp_pass"]},
            {"op": "roll_principal", "principal": "mailer", "detail": "rolled=1 skipped=2"},
        ),
        (
            "/vault/secret/revoke",
            {"name": "api_key"},
            {"name": "api_key", "status": "revoked"},
            {"op": "revoke", "secret_name": "api_key"},
        ),
        (
            "/vault/principal/revoke",
            {"name": "reporter"},
            {"name": "reporter", "status": "principal_revoked"},
            {"op": "revoke_principal", "principal": "reporter"},
        ),
        (
            "/vault/principal/purge",
            {"name": "reporter"},
            {"name": "reporter", "status": "principal_purged"},
            {"op": "purge_principal", "principal": "reporter"},
        ),
    ]
    for path, body, reply, fact in steps:
        assert await hr.client.post(path, json=body, token=None, headers=ADMIN) == (200, reply), path
        event = await last_event(nats_url, "evt.system.vault_changed")
        assert event["type"] == "system.vault_changed"
        assert {**event["data"], **fact} == event["data"] and event["data"]["actor"] == "core-admin-token"
        assert event["data"]["outcome"] == "ok" and b"api-key-value" not in orjson.dumps(event)
    store = made.read()  # the file, decrypted with the test's own key
    assert store["secrets"]["api_key"]["status"] == "revoked" and store["secrets"]["api_key"]["roll_count"] == 1
    assert store["secrets"]["minted"]["value"] and store["secrets"]["minted"]["roll_count"] == 1
    assert "reporter" not in store["principals"]
    # nothing left to roll: Go's nil slices
    assert await hr.client.post("/vault/principal/roll", json={"name": "core"}, token=None, headers=ADMIN) == (
        200,
        {"name": "core", "rolled": None, "skipped": None},
    )


async def test_bad_bodies_and_refused_operations_are_400_with_ductile_texts(
    vault_stack: tuple[Stack, vaults.MadeVault],
) -> None:
    hr, made = vault_stack
    before = made.vault.read_bytes()
    for raw in (b"", b"not json", b"[1]", b'{"name": 5}', b'{"authorized_principals": "mailer"}'):
        status, reply = await hr.client.post("/vault/secret", data=raw, token=None, headers=ADMIN)
        assert (status, reply) == (400, {"error": "invalid JSON body"}), raw
    refused = [
        (
            "/vault/secret",
            {"name": "smtp_pass", "value": "a-different-value"},
            'vault: secret value is immutable via set; use roll: secret "smtp_pass"',
        ),
        (
            "/vault/secret",
            {"name": "core-admin-token", "value": "x"},
            'vault: reserved entity cannot be mutated via the data plane: secret "core-admin-token" (use RotateAdminToken)',
        ),
        ("/vault/principal", {"name": "mailer", "kind": "plugin"}, 'vault: principal already registered: "mailer"'),
        ("/vault/secret/roll", {"name": "nope"}, 'vault: unknown secret: "nope"'),
        (
            "/vault/principal/purge",
            {"name": "core"},
            'vault: reserved entity cannot be mutated via the data plane: principal "core"',
        ),
    ]
    for path, body, text in refused:
        assert await hr.client.post(path, json=body, token=None, headers=ADMIN) == (400, {"error": text}), path
    assert made.vault.read_bytes() == before
    # unknown keys are ignored, and anything after the first JSON value, as Go's decoder does
    status, _ = await hr.client.post(
        "/vault/principal", data=b'{"name":"extra","kind":"gateway","x":1} trailing', token=None, headers=ADMIN
    )
    assert status == 200


async def vault_token_stack(tmp_path: Path, make_config: Any, start_stack: Any, value: str) -> Stack:
    """A stack whose one API token is `secret_ref: ops-token`, held in the vault with `value`."""
    made = vaults.make(tmp_path / "vault", secrets={"ops-token": secret(value)})
    cfg = make_config(
        secrets=settings(made),
        api={"listen": "127.0.0.1:0", "auth": {"tokens": [{"secret_ref": "ops-token", "scopes": ["*"]}]}},
    )
    stack: Stack = await start_stack(cfg)
    return stack


async def test_an_api_token_secret_ref_resolves_from_the_vault(
    tmp_path: Path, make_config: Any, start_stack: Any
) -> None:
    hr = await vault_token_stack(tmp_path, make_config, start_stack, "ops-token-from-the-vault")
    assert (await hr.client.get("/jobs", token="ops-token-from-the-vault"))[0] == 200
    assert (await hr.client.get("/jobs", token="ops-token"))[0] == 401
    status, view = await hr.client.get("/config/view", token="ops-token-from-the-vault")
    assert status == 200 and {"name": "ops-token"} in view["tokens"]
    assert b"ops-token-from-the-vault" not in orjson.dumps(view) and vaults.ADMIN_TOKEN.encode() not in orjson.dumps(
        view
    )


def test_a_secret_ref_takes_the_vault_then_secrets_then_the_environment(tmp_path: Path) -> None:
    vaults.make(
        tmp_path,
        secrets={"hook": secret("hook-secret-from-vault"), "plugin_only": secret("only-for-plugins", "mailer")},
        principals={"mailer": "plugin"},
    )
    (tmp_path / "config.yaml").write_text(
        f"plugin_roots: ['{REPO / 'plugins'}']\n"
        "secrets: {age_key_file: age.key, vault_file: vault.age, hook: literal-from-secrets-section}\n"
        "webhooks:\n"
        "  - {name: a, path: /webhook/a, plugin: echo, secret_ref: hook}\n"
        "  - {name: b, path: /webhook/b, plugin: echo, secret_ref: FROM_ENV}\n"
        "plugins: {echo: {}}\n"
    )
    cfg = config_mod.load(tmp_path / "config.yaml", env={"FROM_ENV": "secret-from-the-environment"})
    assert cfg.webhook_secrets == {"a": "hook-secret-from-vault", "b": "secret-from-the-environment"}
    assert any(w.startswith("secrets.hook: also a secret in the vault") for w in cfg.warnings)
    # a secret granted only to plugins reaches them at spawn, never a secret_ref
    (tmp_path / "config.yaml").write_text(
        f"plugin_roots: ['{REPO / 'plugins'}']\nsecrets: {{age_key_file: age.key, vault_file: vault.age}}\n"
        "webhooks: [{name: a, path: /webhook/a, plugin: echo, secret_ref: plugin_only}]\nplugins: {echo: {}}\n"
    )
    with pytest.raises(errors.ConfigError, match="secret_ref 'plugin_only' resolves to nothing"):
        config_mod.load(tmp_path / "config.yaml", env={})


async def test_a_plugin_gets_its_principal_s_secrets_and_a_rolled_one_at_the_next_job(
    tmp_path: Path, make_config: Any, start_stack: Any
) -> None:
    made = vaults.make(
        tmp_path / "vault",
        principals={"secret-probe": "plugin", "other": "plugin"},
        secrets={
            "probe_token": secret("probe-token-value-1", "secret-probe"),
            "gone": secret("", "secret-probe", status="revoked"),
            "not_mine": secret("other-value", "other"),
        },
    )
    root = probe_root(tmp_path, "secret-probe", "keyless")
    cfg = make_config(
        secrets=settings(made),
        plugin_roots=[str(root)],
        plugins={"secret-probe": {"secrets": {"from_config": "config-level-secret"}}, "keyless": {}},
    )
    hr = await start_stack(cfg)

    async def delivered(plugin: str) -> dict[str, str]:
        job = await hr.client.wait_job(await hr.client.submit(plugin, "poll"))
        assert job["status"] == "succeeded", job
        return job["result"]["result"]["secrets"]  # the plugin's whole reply is the job's result

    assert await delivered("secret-probe") == {
        "probe_token": sha("probe-token-value-1"),
        "from_config": sha("config-level-secret"),
    }
    assert await delivered("keyless") == {}  # not a principal: runs without vault secrets
    assert (
        await hr.client.post(
            "/vault/secret/roll",
            json={"name": "probe_token", "value": "probe-token-value-2"},
            token=None,
            headers=ADMIN,
        )
    )[0] == 200
    assert (await delivered("secret-probe"))["probe_token"] == sha("probe-token-value-2")
    assert (await hr.client.post("/vault/principal/revoke", json={"name": "secret-probe"}, token=None, headers=ADMIN))[
        0
    ] == 200
    job = await hr.client.wait_job(await hr.client.submit("secret-probe", "poll"))
    assert job["status"] != "succeeded" and "principal is not active" in str(job), job


async def test_requires_vault_fails_a_job_whose_principal_is_not_in_the_vault(
    tmp_path: Path, make_config: Any, start_stack: Any
) -> None:
    made = vaults.make(
        tmp_path / "vault",
        principals={"mapped-name": "plugin"},
        secrets={"k": secret("mapped-value-123", "mapped-name")},
    )
    root = probe_root(tmp_path, "strict_probe", "mapped_probe")
    cfg = make_config(
        secrets=settings(made),
        plugin_roots=[str(root)],
        plugins={
            "strict_probe": {"requires_vault": True},
            "mapped_probe": {"vault_principal": "mapped-name", "requires_vault": True},
        },
    )
    assert any("plugins.strict_probe.requires_vault" in w for w in cfg.warnings)
    hr = await start_stack(cfg)
    job = await hr.client.wait_job(await hr.client.submit("strict_probe", "poll"))
    assert job["status"] != "succeeded" and "requires vault secrets but its principal is unknown" in str(job), job
    job = await hr.client.wait_job(await hr.client.submit("mapped_probe", "poll"))
    assert job["status"] == "succeeded" and job["result"]["result"]["secrets"] == {"k": sha("mapped-value-123")}, job


def check_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    full.pop("DUCTILE_AGE_KEY_FILE", None)
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "-c", str(path), "check-config"],
        capture_output=True,
        text=True,
        env=full,
        timeout=60,
        cwd=str(REPO),
    )


def test_a_vault_or_key_that_cannot_be_used_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    made = vaults.make(tmp_path, secrets={"t": secret("never-printed-value")})
    other = vaults.make(tmp_path / "other")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"plugin_roots: ['{REPO / 'plugins'}']\nsecrets: {{age_key_file: age.key, vault_file: vault.age}}\n"
    )
    assert check_config(config).returncode == 0
    cases = [
        (lambda: made.key.chmod(0o640), "age.key' has insecure permissions 0o640"),
        (lambda: made.key.rename(tmp_path / "moved.key"), "age key file"),
        (lambda: shutil.copy(other.key, made.key), "vault: decrypt"),
        (lambda: made.vault.write_text("plain: yaml\n"), "is not age-encrypted"),
        (lambda: made.vault.unlink(), "vault: read"),
    ]
    for damage, text in cases:
        damage()
        done = check_config(config)
        assert done.returncode != 0 and text in done.stderr, (text, done.stderr)
        assert "Traceback" not in done.stderr and "never-printed-value" not in done.stderr + done.stdout
        assert str(tmp_path) in done.stderr  # the file is named
        made = vaults.make(tmp_path, secrets={"t": secret("never-printed-value")})  # whole again


def test_the_vault_secret_delivery_fixture_loads_with_a_vault_beside_it(tmp_path: Path) -> None:
    """The fixture names `age.key` and `vault.age` beside its config.yaml, which its run script creates
    (`vault init`); the copy gets them here, and a manifest-only plugin dir stays as it is."""
    copy = tmp_path / "config"
    shutil.copytree(FIXTURE, copy)
    made = vaults.make(
        copy,
        principals={"secret-probe": "plugin"},
        secrets={"probe_token": secret("probe-token-for-fixture", "secret-probe")},
    )
    done = check_config(copy / "config.yaml")
    assert done.returncode == 0, done.stderr
    assert "secrets.age_key_file" not in done.stderr and "secrets.vault_file" not in done.stderr  # read now
    cfg = config_mod.load(copy / "config.yaml", env={})
    assert cfg.vault is not None and cfg.vault.path == made.vault
    assert cfg.plugin("secret-probe").principal == "secret-probe"
    assert cfg.vault.compose("secret-probe").secrets == {"probe_token": "probe-token-for-fixture"}
    for original in FIXTURE.rglob("*.yaml"):
        assert (copy / original.relative_to(FIXTURE)).read_bytes() == original.read_bytes()


async def test_a_rolled_api_token_takes_effect_at_the_next_reload(
    tmp_path: Path, make_config: Any, start_stack: Any
) -> None:
    hr = await vault_token_stack(tmp_path, make_config, start_stack, "ops-token-before-roll")
    roll = {"name": "ops-token", "value": "ops-token-after-roll"}
    assert (await hr.client.post("/vault/secret/roll", json=roll, token=None, headers=ADMIN))[0] == 200
    assert (await hr.client.get("/jobs", token="ops-token-before-roll"))[0] == 200  # resolved at load, as Ductile
    status, body = await hr.client.post("/system/reload", token="ops-token-before-roll")
    assert status == 200, body
    assert (await hr.client.get("/jobs", token="ops-token-before-roll"))[0] == 401
    assert (await hr.client.get("/jobs", token="ops-token-after-roll"))[0] == 200


def test_vault_init_makes_a_vault_the_config_loads(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "vault-init",
            "--vault",
            str(tmp_path / "vault.age"),
            "--key",
            str(tmp_path / "age.key"),
            "--keygen",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
        cwd=str(REPO),
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert (tmp_path / "age.key").stat().st_mode & 0o777 == 0o600
    (tmp_path / "config.yaml").write_text(
        f"plugin_roots: ['{REPO / 'plugins'}']\nsecrets: {{age_key_file: age.key, vault_file: vault.age}}\n"
    )
    cfg = config_mod.load(tmp_path / "config.yaml", env={})
    assert cfg.vault.authenticate_admin(token)
    assert check_config(tmp_path / "config.yaml").returncode == 0
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "vault-init",
            "--vault",
            str(tmp_path / "vault.age"),
            "--key",
            str(tmp_path / "age.key"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
        cwd=str(REPO),
    )
    assert again.returncode == 1 and "refusing to init" in again.stderr and "Traceback" not in again.stderr


async def test_a_secret_rolled_through_the_api_process_reaches_the_runner_process(
    tmp_path: Path, make_config: Any, nats_url: str, database_url: str
) -> None:
    from services.core import embedded
    from tests.support import stack as stack_mod

    made = vaults.make(
        tmp_path / "vault",
        principals={"secret-probe": "plugin"},
        secrets={"probe_token": secret("cross-process-value-1", "secret-probe")},
    )
    port = embedded.free_port()
    api = {"listen": f"127.0.0.1:{port}", "auth": stack_mod.config_doc()["api"]["auth"]}
    config = make_config(
        api=api,
        secrets=settings(made),
        plugin_roots=[str(probe_root(tmp_path, "secret-probe"))],
        plugins={"secret-probe": {}},
        service={"log_level": "info"},
    )
    processes = stack_mod.service_processes(
        config, port=port, nats_url=nats_url, database_url=database_url, log_dir=tmp_path
    )
    async with processes as (procs, client):

        async def delivered() -> str:
            job = await client.wait_job(await client.submit("secret-probe", "poll"), timeout_s=30)
            assert job["status"] == "succeeded", job
            return job["result"]["result"]["secrets"]["probe_token"]

        assert await delivered() == sha("cross-process-value-1")
        roll = {"name": "probe_token", "value": "cross-process-value-2"}
        assert (await client.post("/vault/secret/roll", json=roll, token=None, headers=ADMIN))[0] == 200
        assert await delivered() == sha("cross-process-value-2")  # the runner process re-read the file
        for proc in procs:
            assert await proc.stop() == 0
        logs = "".join((tmp_path / f"{name}.log").read_text() for name in stack_mod.SERVICE_NAMES)
        assert "vault_changed" in logs and "cross-process-value" not in logs
