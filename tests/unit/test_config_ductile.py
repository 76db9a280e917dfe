"""Config loading as a Ductile operator's files need it: YAML 1.2 scalars, `${VAR}` in parsed values
(a secret survives byte for byte), `.env` files, errors naming file, line and key, Ductile's keys
translated or accepted with one warning each, `secret_ref` tokens, `uses` aliases, narrow scopes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.core import catalog, config, errors, scopes
from tests.support.stack import REPO

ROOTS = f"plugin_roots: ['{REPO / 'plugins'}']\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> config.Config:
    return config.load(write(tmp_path / "config.yaml", ROOTS + text), env=env or {})


def test_an_unquoted_on_is_the_trigger_key(tmp_path: Path) -> None:
    cfg = load(tmp_path, "pipelines:\n  - name: p\n    on: echo.poll\n    steps:\n      - uses: echo\n")
    assert cfg.routes.pipelines["p"].trigger == "echo.poll"
    assert [p.name for p in cfg.routes.triggered_by("echo.poll")] == ["p"]


def test_yes_no_on_off_and_leading_zeros_stay_strings(tmp_path: Path) -> None:
    cfg = load(tmp_path, "plugins:\n  echo:\n    config: {a: yes, b: no, c: on, d: off, e: 0o17, f: 1:30, g: '0123'}\n")
    assert dict(cfg.plugins["echo"].config) == {
        "a": "yes",
        "b": "no",
        "c": "on",
        "d": "off",
        "e": 15,
        "f": "1:30",
        "g": "0123",
    }


@pytest.mark.parametrize("secret", ["abc #tail", "back\\slash", "0123", 'it\'s "quoted"', "a: b", "{x}", "- y"])
def test_a_substituted_secret_survives_byte_for_byte(tmp_path: Path, secret: str) -> None:
    cfg = load(
        tmp_path,
        "secrets:\n  s: '${SECRET}'\n  t: ${SECRET}  # a comment\n"
        "plugins:\n  echo:\n    config:\n      k: x-${SECRET}\n",
        env={"SECRET": secret},
    )
    assert cfg.raw["secrets"] == {"s": secret, "t": secret}
    assert cfg.plugins["echo"].config["k"] == "x-" + secret


def test_default_and_comment_and_unset_variable(tmp_path: Path) -> None:
    cfg = load(tmp_path, "# ${IN_A_COMMENT}\nservice:\n  name: ${NAME:-fallback}  # ${ALSO_A_COMMENT}\n")
    assert cfg.service_name == "fallback"
    f = write(tmp_path / "c2.yaml", ROOTS + "service:\n  log_level: info\n  name: ${UNSET_NAME}\n")
    with pytest.raises(errors.ConfigError) as info:
        config.load(f, env={})
    assert str(info.value) == f"{f}:4: service.name: environment variable ${{UNSET_NAME}} is not set"


def test_env_file_parsed_by_dotenv_verbatim(tmp_path: Path) -> None:
    write(tmp_path / ".env", "# comment\nexport A='abc #tail'\nB=\"x\\\\y\"\nC=plain # trailing comment\nD=${A}\n")
    cfg = load(tmp_path, "environment_vars: {include: [.env]}\nsecrets: {a: '${A}', b: '${B}', c: '${C}', d: '${D}'}\n")
    assert cfg.raw["secrets"] == {"a": "abc #tail", "b": "x\\y", "c": "plain", "d": "${A}"}


def test_a_missing_env_file_is_skipped_and_its_variable_named_where_used(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match=r"config.yaml:5: service.name: environment variable \$\{FROM_FILE\}"):
        load(tmp_path, "environment_vars:\n  include: [missing.env]\nservice:\n  name: ${FROM_FILE}\n")


def test_a_schema_error_names_the_included_file_its_line_and_key(tmp_path: Path) -> None:
    inc = write(tmp_path / "plugins.yaml", "plugins:\n  echo:\n    retry:\n      max_attempts: zero\n")
    with pytest.raises(errors.ConfigError) as info:
        load(tmp_path, "include: [plugins.yaml]\n")
    assert f"{inc}:4: plugins.echo.retry.max_attempts: must be of type integer" in str(info.value)


def test_ductile_keys_are_accepted_with_one_warning_each(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """
log_level: info
service:
  tick_interval: 60s
  log_format: json
  admission: {validate_config_on_boot: true, require_api_auth: false}
  strict_mode: false
state: {path: ./ductile.db}
routes: [{from: a, event_type: b, to: c}]
api:
  management_socket: /tmp/x.sock
""",
    )
    keys = [w.split(":", 1)[0] for w in cfg.warnings]
    assert sorted(keys) == sorted(
        [
            "log_level",
            "routes",
            "state",
            "service.tick_interval",
            "service.strict_mode",
            "service.log_format",
            "service.admission.validate_config_on_boot",
            "api.management_socket",
        ]
    )  # one line each; the gate that is off (require_api_auth) changes nothing
    assert all("no effect" in w for w in cfg.warnings)
    assert (
        cfg.webhook_secrets == {}
    )  # secrets.age_key_file/vault_file are read: tests/conformance/ductile/test_vault.py


def test_schedules_default_to_poll_and_take_ductile_intervals(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        "plugins:\n  echo:\n    config:\n    schedules:\n      - every: hourly\n"
        "      - {id: two, every: 1.5d, catch_up: run_once}\n      - {id: three, every: 2w}\n",
    )
    from services.core import schedules

    found = {
        s.id: s for s in schedules.parse_all({"echo": {"schedules": [dict(x) for x in cfg.plugins["echo"].schedules]}})
    }
    assert found["default"].command == "poll" and found["default"].interval_s == 3600
    assert found["two"].interval_s == 1.5 * 86400 and found["two"].catch_up is True
    assert found["three"].interval_s == 14 * 86400
    assert dict(cfg.plugins["echo"].config) == {}


def test_webhooks_in_ductiles_map_form(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        "webhooks:\n  listen: 127.0.0.1:8091\n  endpoints:\n    - name: gh\n      path: /webhook/gh\n"
        "      plugin: echo\n      secret_ref: gh_secret\n      signature_header: X-Ductile-Signature-256\n",
        env={"gh_secret": "s3cret-value"},
    )
    assert [h["name"] for h in cfg.webhooks] == ["gh"] and cfg.webhook_secrets == {"gh": "s3cret-value"}
    # listen takes effect: a second listener for the webhook paths (tests/conformance/ductile/test_webhook_listener.py)
    assert cfg.webhooks_listen == ("127.0.0.1", 8091) and not any(w.startswith("webhooks") for w in cfg.warnings)


def test_secret_ref_tokens_resolve_from_secrets_then_environment(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        "secrets: {admin: '${ADMIN_TOKEN}'}\napi:\n  auth:\n    tokens:\n"
        "      - {secret_ref: admin, scopes: ['*']}\n      - {secret_ref: ductile-api-readonly, scopes: [plugin:ro, job:ro]}\n",
        env={"ADMIN_TOKEN": "admin-token-value", "ductile-api-readonly": "readonly-token-value"},
    )
    assert {t.token: t.scopes for t in cfg.api.tokens} == {
        "admin-token-value": frozenset({"*"}),
        "readonly-token-value": frozenset({"plugin:ro", "job:ro"}),
    }
    assert any("'job:ro' is no scope any route checks" in w for w in cfg.warnings)
    with pytest.raises(errors.ConfigError, match=r"api.auth.tokens\[0\]: secret_ref 'nope' resolves to nothing"):
        load(tmp_path, "api: {auth: {tokens: [{secret_ref: nope, scopes: ['*']}]}}\n")
    with pytest.raises(errors.ConfigError, match=r"exactly one of token, secret_ref"):
        load(tmp_path, "api: {auth: {tokens: [{secret_ref: a, token: bbbbbbbbbbbb, scopes: ['*']}]}}\n")


def test_a_uses_alias_is_a_plugin_of_its_own_name(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        "plugins:\n  shout: {uses: echo, config: {message: hi}}\n"
        "pipelines:\n  - name: p\n    on: x\n    steps: [{uses: shout}]\n",
    )
    alias = config.plugin_catalog(cfg).get("shout")
    assert alias is not None and alias.name == "shout" and alias.directory == REPO / "plugins" / "echo"
    assert set(alias.commands) == {"poll", "handle", "health"}
    with pytest.raises(errors.ConfigError, match=r"plugins.bad.uses: unknown plugin 'nothing'"):
        load(tmp_path, "plugins:\n  bad: {uses: nothing}\n")


def test_mapping_keys_are_strings_as_go_decodes_them(tmp_path: Path) -> None:
    cfg = load(tmp_path, "plugins:\n  echo:\n    config:\n      7: one\n      true: yes\n      null: x\n      2.5: y\n")
    assert dict(cfg.plugins["echo"].config) == {"7": "one", "true": "yes", "null": "x", "2.5": "y"}


def test_fingerprint_of_a_config_with_on_pipelines(tmp_path: Path) -> None:
    cfg = load(tmp_path, "pipelines:\n  - name: p\n    on: echo.poll\n    steps: [{uses: echo}]\n")
    assert len(config.fingerprint(cfg)) == 16


def test_check_what_up_would_trip_on(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match=r"plugins.ghost.schedules\[0\]: unknown plugin 'ghost'"):
        load(tmp_path, "plugins:\n  ghost:\n    schedules: [{every: 5m}]\n")
    with pytest.raises(errors.ConfigError, match=r"plugin_roots: .*missing is not a directory"):
        config.load(write(tmp_path / "c.yaml", "plugin_roots: [missing]\n"), env={})
    (tmp_path / "empty").mkdir()
    cfg = config.load(write(tmp_path / "c.yaml", "plugin_roots: [empty]\n"), env={})
    assert [w for w in cfg.warnings if w.startswith("plugin_roots:")] == [
        f"plugin_roots: no plugin (*/manifest.yaml) under {tmp_path / 'empty'}"
    ]
    cfg = load(
        tmp_path,
        "pipelines: [{name: lonely, steps: [{uses: echo}]}]\nagents: {a: {llm: {provider: echo}, tools: [nope.cmd]}}\n",
    )
    assert any(w.startswith("pipelines.lonely: no `on:`") for w in cfg.warnings)
    assert any(w.startswith("agents.a: tool 'nope.cmd'") for w in cfg.warnings)


def test_a_directory_entry_point_reads_its_config_yaml(tmp_path: Path) -> None:
    write(tmp_path / "config.yaml", ROOTS + "service: {name: from-dir}\n")
    assert config.load(tmp_path, env={}).service_name == "from-dir"
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(errors.ConfigError, match=r"directory provided but config\.yaml not found"):
        config.load(tmp_path / "empty-dir", env={})


def test_a_missing_include_names_file_line_and_entry(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "{}\n")
    with pytest.raises(errors.ConfigError, match=r"config.yaml:4: include\[1\]: file not found: .*absent.yaml"):
        load(tmp_path, "include:\n  - a.yaml\n  - absent.yaml\n")


def test_circular_include_is_named(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "include: [config.yaml]\n")
    with pytest.raises(errors.ConfigError, match="circular dependency detected"):
        load(tmp_path, "include: [a.yaml]\n")


@pytest.mark.parametrize(
    ("held", "granted", "not_granted"),
    [
        (["plugin:rw"], ["plugin:ro", "plugin:catalog:ro", "plugin:invoke:ro"], ["jobs:ro", "system:rw"]),
        (["plugin:ro"], ["plugin:catalog:ro", "plugin:invoke:ro"], ["plugin:rw"]),
        (["jobs:rw"], ["jobs:ro", "jobs:status:ro", "jobs:result:ro", "jobs:logs:ro", "jobs:tree:ro"], ["plugin:ro"]),
        (["jobs:ro"], ["jobs:status:ro", "jobs:tree:ro"], ["jobs:rw"]),
        (["jobs:status:ro"], ["jobs:status:ro"], ["jobs:ro", "jobs:logs:ro"]),
        (["events:rw"], ["events:ro", "events:meta:ro", "events:payload:ro"], []),
        (["system:rw"], ["system:rw"], ["system:ro"]),
        (["*"], ["system:ro", "anything"], []),
        ([" jobs:ro ", ""], ["jobs:status:ro"], [""]),
    ],
)
def test_ductiles_scope_implications(held: list[str], granted: list[str], not_granted: list[str]) -> None:
    for scope in granted:
        assert scopes.grants(held, scope), (held, scope)
    for scope in not_granted:
        assert not scopes.grants(held, scope), (held, scope)


def test_manifests_are_read_as_yaml_1_2(tmp_path: Path) -> None:
    plugin = tmp_path / "p"
    plugin.mkdir()
    write(
        plugin / "manifest.yaml",
        "manifest_spec: ductile.plugin\nmanifest_version: 1\nname: p\nversion: 0.1.0\n"
        "protocol: 2\nentrypoint: run.sh\ncommands:\n  - name: handle\n    type: write\n"
        "    input_schema:\n      type: object\n      properties:\n        on: {type: string}\n        no: {type: string}\n",
    )
    found = catalog.scan([tmp_path])
    assert found.errors == ()
    schema = found.plugins["p"].commands["handle"].input_schema
    assert schema is not None and set(schema["properties"]) == {"on", "no"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("plugins:\n  echo:\n    schedule: {every: 5m}\n", "config.yaml:4: plugins.echo: unknown key 'schedule'"),
        (
            "plugins:\n  echo:\n    schedules:\n      - {every: 5m, comand: poll}\n",
            "config.yaml:5: plugins.echo.schedules[0]: unknown key 'comand'",
        ),
    ],
)
def test_an_unknown_plugin_or_schedule_key_is_an_error_not_a_silent_drop(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(errors.ConfigError, match=re.escape(message)):
        load(tmp_path, text)
