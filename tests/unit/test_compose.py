"""compose.yaml, deploy/ and the Dockerfile agree with the code: every container runs a real
`headrace` subcommand, the mounted config loads with the real loader (replicas 3), and the
three NATS nodes form a JetStream cluster whose config files nats-server itself accepts.
Docker is not needed: the files are parsed, not run.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from services import cli
from services.core import config as config_mod
from services.core import embedded, errors

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
NATS_NODES = ("nats-1", "nats-2", "nats-3")
HEADRACE_SERVICES = ("api", "dispatcher", "projector", "runner")
NATS_URL = "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222"
CONTAINER_CONFIG = "/config/config.yaml"
_COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` (enough for this file)."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if env.get(name):
            return env[name]
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op and op.endswith("-") else ""

    return _COMPOSE_VAR.sub(replace, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path → host path (relative to the repo) of the service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith(("./", "/")):
            out[target] = source
    return out


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """container path → volume name."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if not source.startswith(("./", "/")):
            out[target] = source
    return out


def nats_conf(services: dict[str, Any], node: str) -> tuple[Path, str]:
    service = services[node]
    argv = service["command"]
    conf_in_container = argv[argv.index("-c") + 1]
    host_path = REPO / bind_mounts(service)[conf_in_container]
    return host_path, host_path.read_text()


def conf_block(text: str, name: str) -> str:
    """The body of `name { … }` in a nats-server config (blocks here do not nest braces)."""
    match = re.search(rf"^\s*{name}\s*\{{(.*?)^\s*\}}", text, re.S | re.M)
    assert match, f"no {name} block"
    return match.group(1)


# --- NATS -------------------------------------------------------------------


def test_three_nats_nodes_on_a_jetstream_capable_image(services: dict[str, Any]) -> None:
    for node in NATS_NODES:
        image = services[node]["image"]
        name, _, tag = image.partition(":")
        assert name == "nats", image
        major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", tag).groups())  # type: ignore[union-attr]
        assert (major, minor) >= (2, 11), image
        assert services[node].get("healthcheck"), f"{node} has no healthcheck"


def test_each_node_has_jetstream_on_its_own_volume(compose: dict[str, Any], services: dict[str, Any]) -> None:
    seen_volumes = set()
    names = set()
    for node in NATS_NODES:
        _, text = nats_conf(services, node)
        names.add(re.search(r"^server_name:\s*(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
        jetstream = conf_block(text, "jetstream")
        store_dir = re.search(r"store_dir:\s*(\S+)", jetstream).group(1)  # type: ignore[union-attr]
        assert re.search(r"^\s*sync_interval:\s*always\s*$", jetstream, re.M), f"{node}: sync_interval is not always"
        volumes = named_volumes(services[node])
        mount = next(target for target in volumes if store_dir.startswith(target.rstrip("/") + "/"))
        seen_volumes.add(volumes[mount])
        assert volumes[mount] in compose["volumes"]
    assert len(seen_volumes) == 3, "every node needs its own JetStream volume"
    assert names == set(NATS_NODES)


def test_cluster_routes_connect_the_three_nodes(services: dict[str, Any]) -> None:
    cluster_names = set()
    for node in NATS_NODES:
        _, text = nats_conf(services, node)
        cluster = conf_block(text, "cluster")
        cluster_names.add(re.search(r"name:\s*(\S+)", cluster).group(1))  # type: ignore[union-attr]
        port = re.search(r"listen:\s*\S*:(\d+)", cluster).group(1)  # type: ignore[union-attr]
        routes = set(re.findall(r"nats-route://([\w.-]+):(\d+)", cluster))
        assert {host for host, _ in routes} >= set(NATS_NODES) - {node}, f"{node} routes: {routes}"
        assert all(p == port for _, p in routes)
    assert len(cluster_names) == 1


def test_nats_server_accepts_the_config_files(services: dict[str, Any]) -> None:
    binary = embedded.nats_server_binary()
    for node in NATS_NODES:
        path, _ = nats_conf(services, node)
        result = subprocess.run([binary, "-c", str(path), "-t"], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr


# --- Postgres -----------------------------------------------------------------


def test_postgres_16_with_a_volume(compose: dict[str, Any], services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert re.match(r"postgres:16\b", postgres["image"])
    volumes = named_volumes(postgres)
    assert volumes.get("/var/lib/postgresql/data") in compose["volumes"]
    assert postgres.get("healthcheck")


# --- Headrace services --------------------------------------------------------


@pytest.mark.parametrize("name", HEADRACE_SERVICES)
def test_each_service_runs_a_real_headrace_subcommand(services: dict[str, Any], name: str) -> None:
    service = services[name]
    argv = service["command"]
    args = cli._parser().parse_args(argv)
    assert args.command == name
    assert args.config == CONTAINER_CONFIG
    assert args.command in cli.COMMANDS
    assert service["build"] in (".", {"context": "."})
    assert bind_mounts(service)[CONTAINER_CONFIG] == "./deploy/config.yaml"


@pytest.mark.parametrize("name", HEADRACE_SERVICES)
def test_each_service_gets_every_nats_node_and_postgres(services: dict[str, Any], name: str) -> None:
    env = services[name]["environment"]
    assert env["NATS_URL"] == NATS_URL
    database_url = interpolate(env["DATABASE_URL"], {})
    assert re.fullmatch(r"postgresql://headrace:[^@]+@postgres:5432/headrace", database_url)
    depends = services[name]["depends_on"]
    for dependency in (*NATS_NODES, "postgres"):
        assert depends[dependency]["condition"] == "service_healthy"


def test_admin_token_must_be_provided(services: dict[str, Any]) -> None:
    token = services["api"]["environment"]["HEADRACE_ADMIN_TOKEN"]
    with pytest.raises(KeyError):
        interpolate(token, {})
    assert interpolate(token, {"HEADRACE_ADMIN_TOKEN": "s3cret-token-value"}) == "s3cret-token-value"


def test_api_publishes_8080_with_a_healthcheck(services: dict[str, Any]) -> None:
    api = services["api"]
    assert "8080:8080" in [str(p) for p in api["ports"]]
    assert "/healthz" in " ".join(api["healthcheck"]["test"])


def test_runner_can_scale(services: dict[str, Any]) -> None:
    runner = services["runner"]
    assert "container_name" not in runner, "`--scale runner=N` needs generated container names"
    assert not runner.get("ports"), "published ports would collide between runner replicas"


# --- deploy/config.yaml ---------------------------------------------------------


def test_deploy_config_loads_with_replicas_3(services: dict[str, Any]) -> None:
    env = {
        key: interpolate(str(value), {"HEADRACE_ADMIN_TOKEN": "compose-admin-token"})
        for key, value in services["api"]["environment"].items()
    }
    config = config_mod.load(REPO / "deploy" / "config.yaml", env=env)
    assert config.nats_replicas == 3
    assert config.nats_url == NATS_URL
    assert config.database_url == env["DATABASE_URL"]
    assert (config.api.host, config.api.port) == ("0.0.0.0", 8080)
    assert any(t.token == "compose-admin-token" and "*" in t.scopes for t in config.api.tokens)
    assert config.plugin_roots == (config_mod.DEFAULT_PLUGIN_ROOT,)


def test_deploy_config_needs_the_admin_token() -> None:
    with pytest.raises(errors.ConfigError, match="HEADRACE_ADMIN_TOKEN"):
        config_mod.load(REPO / "deploy" / "config.yaml", env={})


def test_image_default_config_loads_single_node() -> None:
    config = config_mod.load(REPO / "deploy" / "standalone.yaml", env={"HEADRACE_ADMIN_TOKEN": "x" * 16})
    assert config.nats_replicas == 1
    assert (config.api.host, config.api.port) == ("0.0.0.0", 8080)


# --- Dockerfile -------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def exec_form(value: str) -> list[str]:
    return json.loads(value) if value.startswith("[") else shlex.split(value)


def test_dockerfile_runs_headrace() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    entrypoint = [v for k, v in instructions if k == "ENTRYPOINT"][-1]
    assert exec_form(entrypoint) == ["headrace"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["headrace"] == "services.cli:main"
    command = exec_form([v for k, v in instructions if k == "CMD"][-1])
    assert command == ["up"]
    assert cli._parser().parse_args(command).command == "up"
    env_lines = " ".join(v for k, v in instructions if k == "ENV")
    default_config = re.search(r"HEADRACE_CONFIG=(\S+)", env_lines).group(1)  # type: ignore[union-attr]
    assert default_config == "/app/deploy/standalone.yaml"


def test_dockerfile_installs_the_package_not_the_checkout() -> None:
    """`pip install .` without -e: the image runs the installed wheel (which carries schemas/, plugins/,
    the migrations and config.example.yaml), built from the whole build context copied in, and keeps
    deploy/ (its default config) in /app once the source is gone."""
    instructions = dockerfile_instructions()
    copies = [v for k, v in instructions if k == "COPY"]
    build_dir = copies[-1].split()[-1]
    assert copies[-1] == f". {build_dir}"  # the whole context: pyproject.toml, setup.py, services/, schemas/, …
    assert ("WORKDIR", build_dir) in instructions
    runs = [shlex.split(v) for k, v in instructions if k == "RUN"]
    installs = [
        cmd[cmd.index("install") + 1 :]
        for run in runs
        for cmd in _commands(run)
        if cmd[:2] == ["pip", "install"] and "-r" not in cmd
    ]
    assert len(installs) == 1, installs
    assert installs[0][-1] == "." and "-e" not in installs[0] and "--editable" not in installs[0]
    after = " ".join(" ".join(run) for run in runs)
    assert "cp -r deploy /app/deploy" in after and f"rm -rf {build_dir}" in after
    assert [v for k, v in instructions if k == "WORKDIR"][-1] == "/app"


def _commands(argv: list[str]) -> list[list[str]]:
    """A RUN line's commands, split at `&&`."""
    out: list[list[str]] = [[]]
    for word in argv:
        if word == "&&":
            out.append([])
        else:
            out[-1].append(word)
    return out


def test_dockerignore_keeps_what_the_image_needs() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = [
        "pyproject.toml",
        "setup.py",
        "MANIFEST.in",
        "README.md",
        "config.example.yaml",
        "services/cli.py",
        "schemas/config.json",
        "plugins/echo/run.py",
        "deploy/standalone.yaml",
        "services/projector/migrations/001_read_models.sql",
    ]
    for path in needed:
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = [p for p in patterns if any(fnmatch.fnmatch(prefix, p) for prefix in prefixes)]
        assert not excluded, f"{path} is excluded by {excluded}"
