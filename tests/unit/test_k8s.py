"""deploy/k8s agrees with the cluster topology (tests/cluster/topology.py) and with the code: the
kustomization lists exactly the files there are, every manifest is valid against the Kubernetes API
schemas (kubernetes-validate, strict: an unknown or misspelt field fails), the replicas are the
topology's process and NATS node counts, every container runs a real `headrace` subcommand with the
topology's config (a byte-for-byte copy of deploy/config.yaml) mounted, loads it with the environment
the pod gets, and is probed on /healthz on a port it serves; the NATS config's routes name the three
pods of the StatefulSet and nats-server itself accepts it. No cluster is needed: the files are parsed.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services import cli
from services.core import config as config_mod
from services.core import embedded
from services.runner import service as runner_service
from tests.cluster import topology

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
#: the oldest and the newest Kubernetes whose schemas the validator ships (1.25 and 1.37 in 1.37.0)
KUBERNETES_VERSIONS = (kubernetes_validate.utils.all_versions()[0], kubernetes_validate.utils.latest_version())
HEADRACE = {"app.kubernetes.io/name": "headrace"}
COMPOSE = REPO / "compose.yaml"


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    doc = yaml.safe_load(KUSTOMIZATION.read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def manifests(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    docs = []
    for name in kustomization["resources"]:
        docs.extend(doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc is not None)
    return docs


def of_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in manifests if doc["kind"] == kind}


def generated(kustomization: dict[str, Any]) -> dict[str, dict[str, Path]]:
    """configMapGenerator: name → {key → file}."""
    out: dict[str, dict[str, Path]] = {}
    for generator in kustomization.get("configMapGenerator", []):
        files = {}
        for entry in generator["files"]:
            key, _, path = entry.rpartition("=")
            files[key or Path(path).name] = K8S / path
        out[generator["name"]] = files
    return out


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def only_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1, workload["metadata"]["name"]
    return containers[0]


def headrace_workloads(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: doc
        for name, doc in of_kind(manifests, "Deployment").items()
        if HEADRACE.items() <= doc["spec"]["template"]["metadata"]["labels"].items()
    }


def parsed_args(container: dict[str, Any]) -> Any:
    assert "command" not in container, "the image's entrypoint is `headrace`: give the service as args"
    return cli._parser().parse_args(container["args"])


def mounts(workload: dict[str, Any], container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """mount path → the volume mounted there (a StatefulSet's claim templates as `{"claimTemplate": …}`)."""
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    for claim in workload["spec"].get("volumeClaimTemplates", []):
        volumes[claim["metadata"]["name"]] = {"claimTemplate": claim}
    return {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}


def secret_data(manifests: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {name: doc.get("stringData", {}) for name, doc in of_kind(manifests, "Secret").items()}


def container_env(container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The environment the container gets: plain values, and secretKeyRefs read from the Secret manifests."""
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def container_port(container: dict[str, Any], port: int | str) -> int:
    """The containerPort a probe's port (a number or a name) refers to; it must be declared."""
    declared = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if isinstance(port, str):
        assert port in declared, (port, declared)
        return int(declared[port])
    assert port in declared.values(), (port, declared)
    return port


def nats_conf_text(kustomization: dict[str, Any], manifests: list[dict[str, Any]]) -> tuple[Path, str]:
    """The file the nats StatefulSet's container loads (a key of the ConfigMap mounted at its -c dir)."""
    sts = of_kind(manifests, "StatefulSet")["nats"]
    container = only_container(sts)
    conf = Path(container["args"][container["args"].index("-c") + 1])
    volume = mounts(sts, container)[str(conf.parent)]
    path = generated(kustomization)[volume["configMap"]["name"]][conf.name]
    return path, path.read_text()


def conf_block(text: str, name: str) -> str:
    match = re.search(rf"^\s*{name}\s*\{{(.*?)^\s*\}}", text, re.S | re.M)
    assert match, f"no {name} block"
    return match.group(1)


def nats_pod_names(manifests: list[dict[str, Any]]) -> list[str]:
    """The StatefulSet's pods by their DNS names under its headless Service: nats-0.nats, …"""
    sts = of_kind(manifests, "StatefulSet")["nats"]
    service = sts["spec"]["serviceName"]
    return [f"{sts['metadata']['name']}-{i}.{service}" for i in range(sts["spec"]["replicas"])]


# --- the kustomization ------------------------------------------------------------


def test_kustomization_lists_every_file_and_nothing_missing(kustomization: dict[str, Any]) -> None:
    listed = list(kustomization["resources"])
    files = [path for generator in generated(kustomization).values() for path in generator.values()]
    listed += [str(path.relative_to(K8S)) for path in files]
    assert len(listed) == len(set(listed)), listed
    present = {p.name for p in K8S.iterdir() if p.is_file()} - {KUSTOMIZATION.name}
    assert set(listed) == present
    assert kustomization["namespace"] == "headrace"


def test_every_manifest_is_valid_against_the_kubernetes_schemas(manifests: list[dict[str, Any]]) -> None:
    assert manifests
    for doc in manifests:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']} on {version}: {exc.message}") from exc


def test_the_namespace_is_declared(manifests: list[dict[str, Any]], kustomization: dict[str, Any]) -> None:
    assert list(of_kind(manifests, "Namespace")) == [kustomization["namespace"]]


def test_every_referenced_configmap_and_secret_exists(
    kustomization: dict[str, Any], manifests: list[dict[str, Any]]
) -> None:
    configmaps = set(generated(kustomization)) | set(of_kind(manifests, "ConfigMap"))
    secrets = secret_data(manifests)
    workloads = {**of_kind(manifests, "Deployment"), **of_kind(manifests, "StatefulSet")}
    for workload in workloads.values():
        for volume in pod_spec(workload).get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, volume
        for var in only_container(workload).get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]], ref


def test_selectors_match_their_pods(manifests: list[dict[str, Any]]) -> None:
    workloads = {**of_kind(manifests, "Deployment"), **of_kind(manifests, "StatefulSet")}
    labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads.values()]
    for workload in workloads.values():
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        # a workload's selector picks its own pods and nobody else's
        assert sum(selector.items() <= pod.items() for pod in labels) == 1, selector
    for kind in ("Service", "PodDisruptionBudget"):
        for name, doc in of_kind(manifests, kind).items():
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            assert sum(selector.items() <= pod.items() for pod in labels) == 1, (kind, name)


# --- the topology -------------------------------------------------------------------


def test_process_counts_are_the_topology(manifests: list[dict[str, Any]]) -> None:
    counts: Counter[str] = Counter()
    for workload in headrace_workloads(manifests).values():
        counts[parsed_args(only_container(workload)).command] += workload["spec"]["replicas"]
    assert dict(counts) == topology.PROCESSES


def test_nats_is_a_statefulset_of_the_topology_nodes(manifests: list[dict[str, Any]]) -> None:
    sts = of_kind(manifests, "StatefulSet")["nats"]
    assert sts["spec"]["replicas"] == topology.NATS_NODES
    service = of_kind(manifests, "Service")[sts["spec"]["serviceName"]]
    assert service["spec"]["clusterIP"] == "None", "the pods' DNS names need a headless Service"
    assert service["spec"]["publishNotReadyAddresses"] is True, "nodes must resolve each other before ready"
    assert service["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    assert sts["spec"]["podManagementPolicy"] == "Parallel"


def test_nats_runs_the_compose_image(manifests: list[dict[str, Any]]) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    images = {s["image"] for name, s in compose["services"].items() if name.startswith("nats-")}
    assert [only_container(of_kind(manifests, "StatefulSet")["nats"])["image"]] == sorted(images)


def test_a_pod_disruption_budget_keeps_the_jetstream_quorum(manifests: list[dict[str, Any]]) -> None:
    sts = of_kind(manifests, "StatefulSet")["nats"]
    pods = sts["spec"]["template"]["metadata"]["labels"]
    budgets = [
        pdb
        for pdb in of_kind(manifests, "PodDisruptionBudget").values()
        if pdb["spec"]["selector"]["matchLabels"].items() <= pods.items()
    ]
    assert len(budgets) == 1
    quorum = topology.NATS_NODES // 2 + 1
    assert budgets[0]["spec"]["minAvailable"] == quorum == 2


# --- the Headrace containers ----------------------------------------------------------


def test_every_headrace_workload_is_one_of_the_four(manifests: list[dict[str, Any]]) -> None:
    workloads = headrace_workloads(manifests)
    assert set(of_kind(manifests, "Deployment")) == set(workloads)
    assert sorted(parsed_args(only_container(w)).command for w in workloads.values()) == sorted(topology.PROCESSES)


def test_every_container_runs_a_real_headrace_subcommand_with_the_topology_config(
    kustomization: dict[str, Any], manifests: list[dict[str, Any]]
) -> None:
    config_maps = generated(kustomization)
    for name, workload in headrace_workloads(manifests).items():
        container = only_container(workload)
        args = parsed_args(container)
        assert args.command == name and args.command in cli.COMMANDS
        assert container["image"] == "headrace"  # kustomization.yaml `images` sets the registry and tag
        config = Path(args.config)
        volume = mounts(workload, container)[str(config.parent)]
        assert next(m for m in container["volumeMounts"] if m["mountPath"] == str(config.parent))["readOnly"]
        assert config_maps[volume["configMap"]["name"]][config.name] == K8S / "config.yaml"


def test_the_config_configmap_is_deploy_config_byte_for_byte() -> None:
    assert (K8S / "config.yaml").read_bytes() == topology.CONFIG.read_bytes(), (
        "deploy/k8s/config.yaml must be a copy of deploy/config.yaml: cp deploy/config.yaml deploy/k8s/"
    )


def test_every_container_loads_the_config_with_its_environment(manifests: list[dict[str, Any]]) -> None:
    secrets = secret_data(manifests)
    for workload in headrace_workloads(manifests).values():
        env = container_env(only_container(workload), secrets)
        config = config_mod.load(K8S / "config.yaml", env=env)
        assert config.nats_replicas == topology.NATS_NODES
        assert config.nats_url == env["NATS_URL"] and config.database_url == env["DATABASE_URL"]
        assert len(env["HEADRACE_ADMIN_TOKEN"]) >= 16
        assert any(t.token == env["HEADRACE_ADMIN_TOKEN"] and "*" in t.scopes for t in config.api.tokens)


def test_nats_url_lists_the_three_nodes(kustomization: dict[str, Any], manifests: list[dict[str, Any]]) -> None:
    _, text = nats_conf_text(kustomization, manifests)
    client_port = re.search(r"^listen:\s*\S*:(\d+)", text, re.M).group(1)  # type: ignore[union-attr]
    expected = ",".join(f"nats://{pod}:{client_port}" for pod in nats_pod_names(manifests))
    for workload in headrace_workloads(manifests).values():
        assert container_env(only_container(workload), secret_data(manifests))["NATS_URL"] == expected


def test_probes_hit_healthz_on_a_port_the_container_serves(manifests: list[dict[str, Any]]) -> None:
    secrets = secret_data(manifests)
    for name, workload in headrace_workloads(manifests).items():
        container = only_container(workload)
        args = parsed_args(container)
        if args.command == "api":
            config = config_mod.load(K8S / "config.yaml", env=container_env(container, secrets))
            served, host = config.api.port, config.api.host
        else:
            served, host = args.metrics_port, args.metrics_host
        assert served and host == "0.0.0.0", f"{name}: the kubelet probes the pod's IP"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] == "/healthz", (name, probe)
            assert container_port(container, get["port"]) == served, (name, probe)
        # a NATS or Postgres outage takes a pod out of rotation long before it restarts it
        ready, live = container["readinessProbe"], container["livenessProbe"]
        assert ready["periodSeconds"] * ready["failureThreshold"] < live["periodSeconds"] * live["failureThreshold"]


def test_the_api_service_reaches_the_api_pods(manifests: list[dict[str, Any]]) -> None:
    api = headrace_workloads(manifests)["api"]
    service = of_kind(manifests, "Service")["api"]
    assert service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert container_port(only_container(api), port["targetPort"]) == 8080


def test_resources_and_a_non_root_security_context(manifests: list[dict[str, Any]]) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    image_user = re.search(r"^USER\s+(\d+):(\d+)\s*$", dockerfile, re.M)
    assert image_user, "the image's USER must be numeric for runAsNonRoot"
    workloads = {**of_kind(manifests, "Deployment"), **of_kind(manifests, "StatefulSet")}
    for name, workload in workloads.items():
        spec = pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, name
        if name in headrace_workloads(manifests):
            assert (str(pod["runAsUser"]), str(pod["runAsGroup"])) == image_user.groups(), name
        assert spec["enableServiceLinks"] is False, name
        container = only_container(workload)
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"], name


def test_the_runner_gets_longer_than_its_stop_wait(manifests: list[dict[str, Any]]) -> None:
    runner = headrace_workloads(manifests)["runner"]
    assert pod_spec(runner)["terminationGracePeriodSeconds"] > runner_service.STOP_WAIT_S


# --- the NATS config -------------------------------------------------------------------


def test_the_nats_routes_name_the_three_pods(kustomization: dict[str, Any], manifests: list[dict[str, Any]]) -> None:
    _, text = nats_conf_text(kustomization, manifests)
    cluster = conf_block(text, "cluster")
    port = re.search(r"listen:\s*\S*:(\d+)", cluster).group(1)  # type: ignore[union-attr]
    routes = re.findall(r"nats-route://([\w.-]+):(\d+)", cluster)
    assert sorted(host for host, _ in routes) == nats_pod_names(manifests)
    assert len(routes) == topology.NATS_NODES and all(p == port for _, p in routes)
    sts = of_kind(manifests, "StatefulSet")["nats"]
    ports = {p["name"]: p["containerPort"] for p in only_container(sts)["ports"]}
    assert ports["cluster"] == int(port)


def test_jetstream_is_on_the_claim_and_fsyncs_every_write(
    kustomization: dict[str, Any], manifests: list[dict[str, Any]]
) -> None:
    _, text = nats_conf_text(kustomization, manifests)
    jetstream = conf_block(text, "jetstream")
    assert re.search(r"^\s*sync_interval:\s*always\s*$", jetstream, re.M)
    store_dir = re.search(r"store_dir:\s*(\S+)", jetstream).group(1)  # type: ignore[union-attr]
    sts = of_kind(manifests, "StatefulSet")["nats"]
    holding = [
        volume
        for path, volume in mounts(sts, only_container(sts)).items()
        if store_dir.startswith(path.rstrip("/") + "/")
    ]
    assert len(holding) == 1 and "claimTemplate" in holding[0], "the store must be on the pod's own claim"


def test_the_server_name_comes_from_the_pod(kustomization: dict[str, Any], manifests: list[dict[str, Any]]) -> None:
    _, text = nats_conf_text(kustomization, manifests)
    variable = re.search(r"^server_name:\s*\$(\w+)\s*$", text, re.M).group(1)  # type: ignore[union-attr]
    env = {v["name"]: v for v in only_container(of_kind(manifests, "StatefulSet")["nats"])["env"]}
    assert env[variable]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_nats_server_accepts_the_config(kustomization: dict[str, Any], manifests: list[dict[str, Any]]) -> None:
    path, _ = nats_conf_text(kustomization, manifests)
    binary = embedded.nats_server_binary()
    for pod in nats_pod_names(manifests):
        env = {**os.environ, "SERVER_NAME": pod.partition(".")[0]}
        result = subprocess.run([binary, "-t", "-c", str(path)], capture_output=True, text=True, timeout=30, env=env)
        assert result.returncode == 0, result.stderr
