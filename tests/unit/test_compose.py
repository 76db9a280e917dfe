"""compose.yaml, deploy/ and the Dockerfile agree with the code and with the cluster topology
(tests/cluster/topology.py): as many processes of each `headrace` service and as many NATS nodes as
the topology says, every container runs a real `headrace` subcommand and mounts the topology's config,
which loads with the real loader (replicas 3), every healthcheck hits /healthz on the port its command
serves, and the three NATS nodes form a JetStream cluster whose config files nats-server itself accepts.
Docker is not needed: the files are parsed, not run.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services import cli
from services.core import config as config_mod
from services.core import embedded, errors
from services.runner import service as runner_service
from tests.cluster import topology

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
NATS_NODES = ("nats-1", "nats-2", "nats-3")
#: the compose services that run `headrace` (two API services, each on its own host port; the others replicated)
HEADRACE_SERVICES = ("api-1", "api-2", "dispatcher", "projector", "runner")
API_SERVICES = {"api-1": 8080, "api-2": 8081}  # → host port
REPLICATED = ("dispatcher", "projector", "runner")
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


def is_headrace(service: dict[str, Any]) -> bool:
    """Built from this repository, or run from its image."""
    return "build" in service or str(service.get("image", "")).startswith("headrace")


def replicas(service: dict[str, Any]) -> int:
    return int((service.get("deploy") or {}).get("replicas", 1))


def api_env(service: dict[str, Any]) -> dict[str, str]:
    """The environment compose gives a service, interpolated with an admin token set."""
    return {
        key: interpolate(str(value), {"HEADRACE_ADMIN_TOKEN": "compose-admin-token"})
        for key, value in service["environment"].items()
    }


def healthcheck_url(service: dict[str, Any]) -> tuple[str, int, str]:
    """(host, port, path) of the one URL the healthcheck command fetches."""
    test = " ".join(service["healthcheck"]["test"])
    urls = re.findall(r"http://([\w.-]+):(\d+)(/[\w/-]*)", test)
    assert len(urls) == 1, test
    host, port, path = urls[0]
    return host, int(port), path


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
        assert (major, minor) >= (2, 14), image  # consumer reset on takeover (README: Leadership)
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


def test_the_headrace_services_are_these(services: dict[str, Any]) -> None:
    """Nothing runs `headrace` that the tests below do not check."""
    assert sorted(name for name, service in services.items() if is_headrace(service)) == sorted(HEADRACE_SERVICES)


def test_process_counts_are_the_topology(services: dict[str, Any]) -> None:
    counts: Counter[str] = Counter()
    for name in HEADRACE_SERVICES:
        counts[cli._parser().parse_args(services[name]["command"]).command] += replicas(services[name])
    assert dict(counts) == topology.PROCESSES


def test_nats_node_count_is_the_topology(services: dict[str, Any]) -> None:
    nodes = [name for name, service in services.items() if str(service.get("image", "")).startswith("nats:")]
    assert len(nodes) == topology.NATS_NODES == len(NATS_NODES)
    assert sorted(nodes) == sorted(NATS_NODES)
    assert NATS_URL.split(",") == [f"nats://{node}:4222" for node in NATS_NODES]


@pytest.mark.parametrize("name", HEADRACE_SERVICES)
def test_each_service_runs_a_real_headrace_subcommand(services: dict[str, Any], name: str) -> None:
    service = services[name]
    argv = service["command"]
    args = cli._parser().parse_args(argv)
    assert args.command == name.partition("-")[0]
    assert args.config == CONTAINER_CONFIG
    assert args.command in cli.COMMANDS
    assert service["build"] in (".", {"context": "."})
    assert bind_mounts(service)[CONTAINER_CONFIG] == "./deploy/config.yaml"


@pytest.mark.parametrize("name", HEADRACE_SERVICES)
def test_each_service_mounts_the_topology_config(services: dict[str, Any], name: str) -> None:
    args = cli._parser().parse_args(services[name]["command"])
    mounted = bind_mounts(services[name])[args.config]
    assert (REPO / mounted).resolve() == topology.CONFIG.resolve()
    assert f"{mounted}:{args.config}:ro" in services[name]["volumes"]


@pytest.mark.parametrize("name", HEADRACE_SERVICES)
def test_each_healthcheck_hits_healthz_on_the_port_the_command_serves(services: dict[str, Any], name: str) -> None:
    service = services[name]
    args = cli._parser().parse_args(service["command"])
    host, port, path = healthcheck_url(service)
    assert path == "/healthz" and host in ("127.0.0.1", "localhost")
    if args.command == "api":
        config = config_mod.load(topology.CONFIG, env=api_env(service))
        assert port == config.api.port
        assert config.api.host == "0.0.0.0"  # reachable on 127.0.0.1 inside the container, and published
    else:
        assert port == args.metrics_port != 0
        assert args.metrics_host in ("0.0.0.0", host)
    check = service["healthcheck"]
    assert check["test"][0] == "CMD" and check["test"][1:3] == ["python", "-c"]


class _Status(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def status_server() -> Iterator[tuple[int, type[_Status]]]:
    handler = type("Handler", (_Status,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("name", ["api-1", "dispatcher"])
def test_the_healthcheck_command_fails_on_a_503(
    services: dict[str, Any], name: str, status_server: tuple[int, type[_Status]]
) -> None:
    """The healthcheck's own code, run against a local server on its port: exit 0 on a 200, not on a 503
    (/healthz's answer while NATS or Postgres is down)."""
    port, handler = status_server
    _, served, _ = healthcheck_url(services[name])
    code = services[name]["healthcheck"]["test"][3].replace(f":{served}/", f":{port}/")
    for status, ok in ((200, True), (503, False)):
        handler.status = status
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
        assert (result.returncode == 0) is ok, (status, result.stderr)


@pytest.mark.parametrize("name", HEADRACE_SERVICES)
def test_each_service_gets_every_nats_node_and_postgres(services: dict[str, Any], name: str) -> None:
    env = services[name]["environment"]
    assert env["NATS_URL"] == NATS_URL
    database_url = interpolate(env["DATABASE_URL"], {})
    assert re.fullmatch(r"postgresql://headrace:[^@]+@postgres:5432/headrace", database_url)
    depends = services[name]["depends_on"]
    for dependency in (*NATS_NODES, "postgres"):
        assert depends[dependency]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", HEADRACE_SERVICES)
def test_admin_token_must_be_provided(services: dict[str, Any], name: str) -> None:
    token = services[name]["environment"]["HEADRACE_ADMIN_TOKEN"]
    with pytest.raises(KeyError):
        interpolate(token, {})
    assert interpolate(token, {"HEADRACE_ADMIN_TOKEN": "s3cret-token-value"}) == "s3cret-token-value"


def test_each_api_publishes_its_own_host_port_with_a_healthcheck(services: dict[str, Any]) -> None:
    for name, host_port in API_SERVICES.items():
        api = services[name]
        config = config_mod.load(topology.CONFIG, env=api_env(api))
        assert [str(p) for p in api["ports"]] == [f"{host_port}:{config.api.port}"]
        assert "/healthz" in " ".join(api["healthcheck"]["test"])
    assert API_SERVICES["api-1"] == 8080  # where the README's curl goes
    assert len(set(API_SERVICES.values())) == len(API_SERVICES)


@pytest.mark.parametrize("name", REPLICATED)
def test_replicated_services_can_scale(services: dict[str, Any], name: str) -> None:
    service = services[name]
    assert "container_name" not in service, "replicas and `--scale` need generated container names"
    assert not service.get("ports"), "published ports would collide between replicas"


def test_the_runner_gets_longer_than_its_stop_wait(services: dict[str, Any]) -> None:
    """A stopping runner waits up to STOP_WAIT_S for its running attempts (services/runner/service.py)."""
    grace = services["runner"]["stop_grace_period"]
    assert re.fullmatch(r"\d+s", grace) and int(grace[:-1]) > runner_service.STOP_WAIT_S


# --- deploy/config.yaml ---------------------------------------------------------


def test_deploy_config_loads_with_replicas_3(services: dict[str, Any]) -> None:
    env = api_env(services["api-1"])
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
