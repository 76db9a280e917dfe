"""The cluster topology that compose.yaml, deploy/k8s and the cluster test share: how many
processes of each kind run, and the config file they all load. The parse tests of compose.yaml
and deploy/k8s check those files against it; the cluster test starts exactly this.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: every Headrace process and every nats-server loads or matches this file
CONFIG = REPO / "deploy" / "config.yaml"
NATS_NODES = 3
#: `headrace <service>` → processes of it
PROCESSES = {"api": 2, "dispatcher": 2, "projector": 2, "runner": 2}
