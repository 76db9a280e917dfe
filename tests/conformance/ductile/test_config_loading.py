"""Config loading as Ductile's loader does it (shared/spec/ductile-conformance.md §5.1-§5.6), through
`config.load` like `headrace check-config`: includes and how they merge, the entry point, YAML 1.2,
durations, and the defaults a Ductile file relies on. Where Headrace differs on purpose the test
says so (README "Migrating from Ductile")."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core import config as config_mod
from services.core import errors
from tests.support.stack import REPO

ROOTS = f"plugin_roots: ['{REPO / 'plugins'}']\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_later_file_replaces_a_plugin_entry_whole(tmp_path: Path) -> None:
    """§5.2: plugins is a map whose entries a later file replaces, no per-field merge."""
    write(
        tmp_path / "config.yaml",
        ROOTS + "include: [extra.yaml]\nplugins:\n  echo:\n    enabled: true\n"
        "    config: {a: 1}\n    retry: {max_attempts: 7}\n",
    )
    write(tmp_path / "extra.yaml", "plugins:\n  echo:\n    enabled: true\n    config: {b: 2}\n")
    cfg = config_mod.load(tmp_path, env={})
    echo = cfg.plugin("echo")
    assert echo.config == {"b": 2} and echo.retry.max_attempts == 4  # the first file's retry is gone too


def test_include_lists_append_and_scalars_later_win(tmp_path: Path) -> None:
    """§5.2: plugin_roots and webhooks.endpoints append; service.name: a later non-empty value wins."""
    write(
        tmp_path / "config.yaml",
        ROOTS + "service: {name: first}\ninclude: [more]\n"
        "api:\n  auth:\n    tokens: [{token: first-token-000, scopes: ['*']}]\n",
    )
    write(tmp_path / "more" / "a.yaml", "service: {name: second}\n")
    write(
        tmp_path / "more" / "b.yaml",
        f"plugin_roots: ['{REPO / 'tests' / 'plugins'}']\n"
        "api:\n  auth:\n    tokens: [{token: second-token-00, scopes: [jobs:ro]}]\n",
    )
    cfg = config_mod.load(tmp_path / "config.yaml", env={})
    assert cfg.service_name == "second"
    assert [p.name for p in cfg.plugin_roots] == ["plugins", "plugins"] and len(cfg.plugin_roots) == 2
    assert [t.token for t in cfg.api.tokens] == ["first-token-000", "second-token-00"]


def test_include_errors_name_the_entry(tmp_path: Path) -> None:
    """§5.2: a missing include and a cycle are errors naming the include entry."""
    write(tmp_path / "config.yaml", ROOTS + "include: [missing.yaml]\n")
    with pytest.raises(errors.ConfigError) as caught:
        config_mod.load(tmp_path / "config.yaml", env={})
    assert "include[0]" in caught.value.message and "file not found" in caught.value.message
    write(tmp_path / "config.yaml", ROOTS + "include: [loop.yaml]\n")
    write(tmp_path / "loop.yaml", "include: [config.yaml]\n")
    with pytest.raises(errors.ConfigError) as caught:
        config_mod.load(tmp_path / "config.yaml", env={})
    assert "circular dependency detected" in caught.value.message


def test_entry_point_errors(tmp_path: Path) -> None:
    """§5.1: a directory without config.yaml, and a missing path, are named."""
    with pytest.raises(errors.ConfigError) as caught:
        config_mod.load(tmp_path, env={})
    assert "directory provided but config.yaml not found" in caught.value.message
    with pytest.raises(errors.ConfigError) as caught:
        config_mod.load(tmp_path / "nowhere.yaml", env={})
    assert "nowhere.yaml" in caught.value.message


def test_yaml_1_2_and_env_substitution(tmp_path: Path) -> None:
    """§5.1: `on:` is the key "on", yes/on stay strings in plugin config, ${NAME} from the environment."""
    write(
        tmp_path / "config.yaml",
        ROOTS + "plugins:\n  echo:\n    enabled: true\n"
        "    config: {flag: yes, mode: on, model: '${HR_MODEL}'}\n"
        "pipelines:\n  - name: p\n    on: echo.poll\n    steps:\n      - uses: echo\n",
    )
    cfg = config_mod.load(tmp_path, env={"HR_MODEL": "gpt"})
    assert cfg.plugin("echo").config == {"flag": "yes", "mode": "on", "model": "gpt"}
    assert cfg.pipelines[0]["on"] == "echo.poll"


def test_durations_take_go_units_and_more(tmp_path: Path) -> None:
    """§5.1: Go durations (300ms, 1h30m) load; `d` is accepted too (Go refuses it: Ductile's own docs
    show job_log_retention: 30d); a bare number is seconds here (Go: nanoseconds, differs)."""
    write(
        tmp_path / "config.yaml",
        ROOTS + "service:\n  dedupe_ttl: 1h30m\n  job_log_retention: 30d\n"
        "plugins:\n  echo:\n    enabled: true\n    timeouts: {poll: 300ms, handle: 90}\n",
    )
    cfg = config_mod.load(tmp_path, env={})
    assert cfg.dedupe_ttl_s == 5400 and cfg.job_log_retention_s == 30 * 86400
    assert cfg.plugin("echo").timeout_s("poll") == 0.3 and cfg.plugin("echo").timeout_s("handle") == 90


def test_plugin_defaults_match_ductiles(tmp_path: Path) -> None:
    """§5.5: retry 4 attempts / 30 s base; timeouts poll 60 s, handle 120 s, health 10 s, init 30 s;
    breaker 3 / 30 m; a `timeouts` key for any other command is that command's timeout."""
    write(tmp_path / "config.yaml", ROOTS + "plugins:\n  echo:\n    enabled: true\n    timeouts: {cpu: 15s}\n")
    echo = config_mod.load(tmp_path, env={}).plugin("echo")
    assert echo.retry.max_attempts == 4 and echo.retry.backoff_base_s == 30
    assert echo.circuit_breaker.threshold == 3 and echo.circuit_breaker.reset_after_s == 1800
    assert (echo.timeout_s("handle"), echo.timeout_s("health"), echo.timeout_s("init"), echo.timeout_s("cpu")) == (
        120,
        10,
        30,
        15,
    )
    assert echo.timeout_s("poll") == 60


def test_service_and_api_defaults(tmp_path: Path) -> None:
    """§5.4: dedupe_ttl 24 h, max_concurrent_sync 10, listen 127.0.0.1:8080, max_workers CPUs-1 (>= 1)."""
    cfg = config_mod.load(write(tmp_path / "config.yaml", ROOTS), env={})
    assert cfg.dedupe_ttl_s == 86400 and cfg.api.max_concurrent_sync == 10
    assert (cfg.api.host, cfg.api.port) == ("127.0.0.1", 8080) and cfg.max_workers >= 1


def test_parallelism_above_max_workers_is_refused(tmp_path: Path) -> None:
    """§5.5: `parallelism (<p>) cannot exceed service.max_workers (<m>)`."""
    write(
        tmp_path / "config.yaml",
        ROOTS + "service: {max_workers: 2}\nplugins:\n  echo:\n    enabled: true\n    parallelism: 3\n",
    )
    with pytest.raises(errors.ConfigError) as caught:
        config_mod.load(tmp_path, env={})
    assert "parallelism" in caught.value.message and "max_workers" in caught.value.message


def test_a_disabled_plugin_is_neither_scheduled_nor_listed(tmp_path: Path) -> None:
    """§5.5: disabled plugins are not scheduled; `enabled: false` is honoured as in Ductile."""
    write(tmp_path / "config.yaml", ROOTS + "plugins:\n  echo:\n    enabled: false\n    schedules: [{every: 5m}]\n")
    cfg = config_mod.load(tmp_path, env={})
    assert cfg.plugin("echo").enabled is False and cfg.schedules[0].plugin == "echo"


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("{every: 0s}", "positive"),
        ("{}", "exactly one of"),
        ("{cron: '61 * * * *'}", "cron"),
        ("{at: 'tomorrow'}", "RFC 3339"),
    ],
)
def test_schedule_rules(tmp_path: Path, schedule: str, message: str) -> None:
    """§5.6: exactly one of every/cron/at/after, a positive interval, valid cron and at. (A scheduled
    `handle` Ductile refuses is a Headrace feature: the job gets a `schedule.<id>` event; differs.)"""
    write(tmp_path / "config.yaml", ROOTS + f"plugins:\n  echo:\n    enabled: true\n    schedules: [{schedule}]\n")
    with pytest.raises(errors.ConfigError) as caught:
        config_mod.load(tmp_path, env={})
    assert "plugins.echo.schedules[0]" in caught.value.message and message in caught.value.message, caught.value
