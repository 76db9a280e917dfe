"""Config loading: env substitution, includes, schema errors that name the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.core import config, errors
from tests.support.stack import REPO


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_example_config_loads() -> None:
    cfg = config.load(REPO / "config.example.yaml", env={"HEADRACE_ADMIN_TOKEN": "t" * 20})
    assert cfg.api.port == 8080 and cfg.plugins["echo"].parallelism == 2
    assert cfg.plugins["echo"].timeout_s("handle") == 10 and cfg.plugins["echo"].timeout_s("poll") == 60
    assert any(t.token == "t" * 20 and "*" in t.scopes for t in cfg.api.tokens)


def test_env_substitution_with_defaults_and_missing(tmp_path: Path) -> None:
    f = write(
        tmp_path / "c.yaml",
        "# ${NOT_SUBSTITUTED_IN_COMMENTS}\nservice: {name: '${NAME}', log_level: '${LVL:-debug}'}\n",
    )
    cfg = config.load(f, env={"NAME": "svc"})
    assert cfg.service_name == "svc" and cfg.log_level == "debug"
    with pytest.raises(errors.ConfigError, match=r"\$\{NAME\} is not set"):
        config.load(f, env={})


def test_includes_merge_maps_append_arrays(tmp_path: Path) -> None:
    (tmp_path / "extra").mkdir()
    write(
        tmp_path / "extra" / "a.yaml",
        "plugins: {echo: {parallelism: 3}}\npipelines: [{name: b, steps: [{uses: echo}]}]\n",
    )
    f = write(
        tmp_path / "config.yaml",
        "include: [extra]\nservice: {max_workers: 4}\nplugins: {echo: {enabled: true, parallelism: 1}}\n"
        "pipelines: [{name: a, steps: [{uses: echo}]}]\n",
    )
    cfg = config.load(f, env={})
    assert cfg.plugins["echo"].parallelism == 3 and cfg.plugins["echo"].enabled
    assert [p["name"] for p in cfg.pipelines] == ["a", "b"]


def test_env_files_preload_without_overriding(tmp_path: Path) -> None:
    write(tmp_path / ".env", "A=from-file\nexport B=from-file\n")
    f = write(tmp_path / "c.yaml", "environment_vars: {include: [.env]}\nservice: {name: '${A}-${B}'}\n")
    assert config.load(f, env={"B": "from-env"}).service_name == "from-file-from-env"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("plugins: {echo: {parallelism: zero}}\n", "plugins.echo.parallelism"),
        ("api: {listen: 'nonsense'}\n", "api.listen"),
        (
            "api: {auth: {tokens: [{token: short, scopes: ['*']}]}}\n",
            "api.auth.tokens[0].token: is too short (minimum 8 characters)",
        ),
        ("api: {auth: {tokens: [{token: long-enough-token, scopes: [root]}]}}\n", "api.auth.tokens[0].scopes[0]"),
        ("surprise: 1\n", "surprise"),
        (
            "plugins: {echo: {retry: {backoff_base: soon}}}\n",
            "plugins.echo.retry.backoff_base: must be a duration (seconds, or e.g. 500ms, 30s, 5m, 1h30m, 7d)",
        ),
        ("surprise: 1\n", "(root): unknown key 'surprise'"),
        ("service: {max_workers: 1}\nplugins: {echo: {parallelism: 2}}\n", "plugins.echo.parallelism"),
    ],
)
def test_schema_violations_name_the_field(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(errors.ConfigError) as info:
        config.load(write(tmp_path / "c.yaml", text), env={})
    assert needle in str(info.value)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match=r"invalid YAML at line \d+, column \d+"):
        config.load(write(tmp_path / "c.yaml", "service:\n  name: [unclosed\n"), env={})


@pytest.mark.parametrize("command", ["api", "dispatcher", "check-config"])
def test_a_process_refuses_to_start_on_a_bad_config(tmp_path: Path, command: str) -> None:
    bad = write(tmp_path / "c.yaml", "plugins: {echo: {parallelism: -1}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "-c", str(bad), command],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "NATS_URL": "nats://127.0.0.1:1"},
    )
    assert proc.returncode == 1
    assert "plugins.echo.parallelism" in proc.stderr and "Traceback" not in proc.stderr


def test_durations() -> None:
    from services.core.durations import parse_seconds

    assert parse_seconds("30s") == 30 and parse_seconds("1h30m") == 5400 and parse_seconds("250ms") == 0.25
    assert parse_seconds(5) == 5 and parse_seconds("7d") == 7 * 86400
    for bad in ("soon", "5 x", "", "-1s"):
        with pytest.raises(ValueError):
            parse_seconds(bad)


SECRET_BEARING = """\
secrets: {gh: GHSECRET-from-env, bad: 31415926535}
api:
  auth:
    tokens:
      - {token: first-token-000, scopes: ['*']}
      - {token: 2718281828, scopes: ['*']}
      - {token: SHRTPW7, scopes: ['*']}
plugins:
  echo: {secrets: {k: PLUGINSECRET1}, parallelism: PLUGINSECRET1}
agents:
  w: {llm: {provider: echo, api_key: 16180339887}}
"""
LEAKS = ("SHRTPW7", "2718281828", "31415926535", "PLUGINSECRET1", "16180339887")


def test_config_errors_name_path_and_rule_never_a_secret(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError) as info:
        config.load(write(tmp_path / "c.yaml", SECRET_BEARING), env={})
    message = str(info.value)
    assert "api.auth.tokens[2].token: is too short (minimum 8 characters)" in message
    assert "api.auth.tokens[1].token: must be of type string" in message
    assert "secrets.bad: must be of type string" in message and "agents.w.llm.api_key" in message
    assert "plugins.echo.parallelism" in message
    assert not [leak for leak in LEAKS if leak in message], message


def test_our_own_checks_never_echo_a_secret(tmp_path: Path) -> None:
    """A secret substituted into a field our own checks quote (here a schedule's timezone, an env mix-up)
    is redacted from the message."""
    text = (
        "api: {auth: {tokens: [{token: '${T}', scopes: ['*']}]}}\n"
        "plugins: {echo: {schedules: [{id: a, every: 5m, command: poll, timezone: '${T}'}]}}\n"
    )
    with pytest.raises(errors.ConfigError) as info:
        config.load(write(tmp_path / "c.yaml", text), env={"T": "Tok-Secret-123"})
    assert "unknown timezone <redacted>" in str(info.value) and "Tok-Secret-123" not in str(info.value)
    assert (
        config.redact(
            "quoting 'hunter2-secret' and hunter2-secret, not hunter2-secrets", {"secrets": {"s": "hunter2-secret"}}, {}
        )
        == "quoting <redacted> and <redacted>, not hunter2-secrets"
    )
    hook = {"webhooks": [{"secret_ref": "ENV_SECRET"}]}
    assert config.redact("x env-secret-value y", hook, {"ENV_SECRET": "env-secret-value"}) == "x <redacted> y"


def test_check_config_prints_no_secret(tmp_path: Path) -> None:
    bad = write(tmp_path / "c.yaml", SECRET_BEARING)
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "-c", str(bad), "check-config"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 1 and "api.auth.tokens[2].token: is too short" in proc.stderr, proc.stderr
    assert not [leak for leak in LEAKS if leak in proc.stdout + proc.stderr], proc.stderr


def test_leader_lease_defaults_and_limits(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path / "d.yaml", "service: {name: x}\n"), env={})
    assert (cfg.leader_lease_ttl_s, cfg.leader_lease_renew_s) == (5.0, 1.0)
    cfg = config.load(write(tmp_path / "s.yaml", "service: {leader_lease: {ttl: 3s, renew: 500ms}}\n"), env={})
    assert (cfg.leader_lease_ttl_s, cfg.leader_lease_renew_s) == (3.0, 0.5)
    for text, needle in (
        ("service: {leader_lease: {ttl: 500ms}}\n", r"leader_lease\.ttl: 0\.5s is shorter than the minimum 1s"),
        ("service: {leader_lease: {ttl: 3s, renew: 2s}}\n", r"leader_lease\.renew: 2s must be .* a third of the ttl"),
        ("service: {leader_lease: {renew: 0}}\n", r"leader_lease\.renew: 0s must be positive"),
        ("service: {leader_lease: {tll: 3s}}\n", r"service\.leader_lease"),
    ):
        with pytest.raises(errors.ConfigError, match=needle):
            config.load(write(tmp_path / "bad.yaml", text), env={})
