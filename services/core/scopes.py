"""The scope model in one table: which scope every HTTP route needs, and which scope every kind
of work needs however a request causes it (directly, or through an agent's tool call, a Laddr
job, a replay, a prompt or a retry).

    ROUTES              (method, path) -> Rule: the gate of the route itself (services/api/guard.py
                        enforces it before any handler runs; a route without an entry fails the
                        app's start and tests/e2e/test_scope_matrix.py)
    work_scope(...)     the scope the *direct* route for a piece of work needs: `plugin:ro` for a
                        `read` command, `plugin:rw` for any other command and for a pipeline
    Authority           the caller's scopes, carried in a job's submit command (`data.authority`),
                        its queued event and every work item, so work done later on its behalf (an
                        agent's tool calls, a prompt's agents, the dispatcher's retries) is checked
                        against the caller, not against whoever runs it

A job without an authority was started by the system itself (a schedule, a webhook, an ingest
event, a pipeline's routing): the operator's config is its authority and nothing is checked.
Imported by the API, the dispatcher and the runner; imports nothing of theirs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.core import catalog as catalog_mod

SCOPES = ("*", "plugin:ro", "plugin:rw", "jobs:ro", "jobs:rw", "events:ro", "events:rw")
#: every scope a Ductile token may carry (`internal/auth/auth.go`); any other string is kept but matches nothing
KNOWN_SCOPES = frozenset(
    {
        *SCOPES,
        "plugin:catalog:ro",
        "plugin:invoke:ro",
        "jobs:status:ro",
        "jobs:result:ro",
        "jobs:logs:ro",
        "jobs:tree:ro",
        "events:meta:ro",
        "events:payload:ro",
        "system:ro",
        "system:rw",
    }
)
#: what holding a scope implies, applied in this order (Ductile's `normalizeScopes`), plus one rule of the
#: reference we serve (ductile-api.md: `plugin:ro` may run `read` commands, hence `plugin:invoke:ro`)
_IMPLICATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("plugin:rw", ("plugin:ro", "plugin:catalog:ro", "plugin:invoke:ro")),
    ("plugin:ro", ("plugin:catalog:ro", "plugin:invoke:ro")),
    ("jobs:rw", ("jobs:ro",)),
    ("jobs:ro", ("jobs:status:ro", "jobs:result:ro", "jobs:logs:ro", "jobs:tree:ro")),
    ("events:rw", ("events:ro",)),
    ("events:ro", ("events:meta:ro", "events:payload:ro")),
)


def implied(scopes: Iterable[str]) -> frozenset[str]:
    """`scopes` trimmed, empty ones dropped, with everything they imply (nothing implies `system:*`;
    `system:rw` does not imply `system:ro`). The one place scope implication is decided."""
    held = {s.strip() for s in scopes if isinstance(s, str) and s.strip()}
    for holder, implies in _IMPLICATIONS:
        if holder in held:
            held.update(implies)
    return frozenset(held)


READ_COMMAND = "plugin:invoke:ro"
WRITE_COMMAND = "plugin:rw"
PIPELINE = "plugin:rw"
#: the plugin name of pipeline root jobs (core.pipelines)
PIPELINE_PLUGIN = "pipeline"
#: agent runs and prompts (core.agents.RESERVED): their own route gates them, their tools are checked one by one
_RESERVED = frozenset({"agent", "prompt"})


def grants(scopes: Iterable[str], needed: str) -> bool:
    """Whether a holder of `scopes` has `needed`."""
    held = implied(scopes)
    return "*" in held or needed in held


def grants_any(scopes: Iterable[str], any_of: Iterable[str]) -> bool:
    held = implied(scopes)
    return any("*" in held or needed in held for needed in any_of)


# --- work ------------------------------------------------------------------------------------------


def command_scope(command_type: str | None) -> str:
    """What POST /plugin/{p}/{c} needs for a command of this manifest `type`."""
    return READ_COMMAND if command_type == "read" else WRITE_COMMAND


def work_scope(catalog: catalog_mod.Catalog, plugin: str, command: str) -> str | None:
    """The scope the direct route for running `plugin.command` needs; None for agent runns and prompts
    (gated by their own routes; their tool calls carry the caller's authority and are checked each).
    A command the catalog does not know (any more) needs the strictest plugin scope."""
    if plugin in _RESERVED:
        return None
    if plugin == PIPELINE_PLUGIN:
        return PIPELINE
    manifest = catalog.get(plugin)
    spec = manifest.commands.get(command) if manifest is not None else None
    return command_scope(spec.type if spec is not None else None)


@dataclasses.dataclass(frozen=True, slots=True)
class Authority:
    """On whose behalf a job runs: the caller's token name and scopes at submit time."""

    principal: str | None
    scopes: frozenset[str]

    def to_data(self) -> dict[str, Any]:
        return {"principal": self.principal, "scopes": sorted(self.scopes)}

    @classmethod
    def from_data(cls, data: Any) -> Authority | None:
        """The authority recorded in a command or work item; None = started by the system (unrestricted).
        A malformed record grants nothing rather than everything."""
        if data is None:
            return None
        if not isinstance(data, Mapping) or not isinstance(data.get("scopes"), list):
            return cls(principal=None, scopes=frozenset())
        principal = data.get("principal")
        return cls(
            principal=principal if isinstance(principal, str) else None,
            scopes=frozenset(s for s in data["scopes"] if isinstance(s, str)),
        )

    def allows(self, needed: str | None) -> bool:
        return needed is None or grants(self.scopes, needed)

    def who(self) -> str:
        return f"token {self.principal!r}" if self.principal else "the caller's token"


def forbidden_reason(
    authority: Authority | None, catalog: catalog_mod.Catalog, plugin: str, command: str
) -> str | None:
    """Why `authority` may not run `plugin.command` (None when it may, or when the system runs it)."""
    if authority is None:
        return None
    needed = work_scope(catalog, plugin, command)
    if authority.allows(needed):
        return None
    return f"forbidden: {authority.who()} lacks {needed}, which {plugin}.{command} needs"


# --- routes ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """The gate of one route. `any_of` empty = open (no token needed); `webhook` = the HMAC signature
    is the authentication (checked by the handler); `work` names the further check of what it runs."""

    any_of: tuple[str, ...] = ()
    query_token: bool = False
    webhook: bool = False
    work: str | None = None
    #: the narrower scopes Ductile also admits here (`jobs:status:ro` for GET /job/{id}); `any_of` stays
    #: what the reference we serve documents
    narrow: tuple[str, ...] = ()
    #: the vault admin token (the vault's `core-admin-token`) is the authentication, checked by the
    #: handler (services/api/vault.py); API tokens are not accepted
    vault_admin: bool = False
    #: a Laddr WebSocket: the handler authenticates with Laddr's WebSocket rules (`?api_key=`, `X-API-Key`,
    #: Bearer, `?token=`; refused with 403 before the upgrade) against `any_of` (services/api/laddr_ws.py)
    websocket: bool = False

    @property
    def open(self) -> bool:
        return not self.any_of


OPEN = Rule()
WEBHOOK = Rule(webhook=True, work="the webhook's configured plugin command (operator's config)")
VAULT_ADMIN = Rule(vault_admin=True)


def need(*any_of: str, query_token: bool = False, work: str | None = None, narrow: tuple[str, ...] = ()) -> Rule:
    return Rule(any_of=any_of, query_token=query_token, work=work, narrow=narrow)


def websocket(*any_of: str) -> Rule:
    return Rule(any_of=any_of, query_token=True, websocket=True)


#: the path under which WEBHOOK stands for every configured webhook path
WEBHOOK_PATH = "<webhook>"
#: the path under which RELAY stands for `POST <remote_ingress.listen_path>/{peer}`
RELAY_PATH = "<relay>"
RELAY = Rule(webhook=True, work="pipelines whose `on` is the relayed event type (operator's config)")

#: every route the API serves. GET covers HEAD. `work` says what else is checked where work is made.
ROUTES: dict[tuple[str, str], Rule] = {
    ("GET", "/"): OPEN,
    ("GET", "/healthz"): OPEN,
    ("GET", "/plugins"): OPEN,
    ("GET", "/skills"): OPEN,
    ("GET", "/openapi.json"): OPEN,
    ("GET", "/plugin/{name}/openapi.json"): OPEN,
    ("GET", "/.well-known/ai-plugin.json"): OPEN,
    ("GET", "/plugin/{name}"): need("plugin:ro", narrow=("plugin:catalog:ro",)),
    ("POST", "/plugin/{plugin}/{command}"): need(
        "plugin:ro",
        work="command: plugin:ro (or plugin:invoke:ro) for read, plugin:rw else",
        narrow=("plugin:invoke:ro",),
    ),
    ("POST", "/pipeline/{name}"): need(PIPELINE),
    ("GET", "/job/{job_id}"): need("jobs:ro", narrow=("jobs:status:ro",)),
    ("GET", "/job/{job_id}/tree"): need("jobs:ro", narrow=("jobs:tree:ro",)),
    ("GET", "/jobs"): need("jobs:ro", narrow=("jobs:status:ro",)),
    ("GET", "/job-logs"): need("jobs:ro", narrow=("jobs:logs:ro",)),
    ("POST", "/job/{job_id}/cancel"): need("jobs:rw"),
    ("POST", "/job/{job_id}/retry"): need("jobs:rw", work="the job's work_scope; agents' tools by authority"),
    ("GET", "/scheduler/jobs"): need("jobs:ro", narrow=("jobs:status:ro",)),
    ("GET", "/events"): need("events:ro", query_token=True),
    ("GET", "/events/rejected"): need("events:ro"),
    ("GET", "/analytics/queue"): need("*"),
    ("GET", "/analytics/summary"): need("*"),
    ("GET", "/config/view"): need("*", narrow=("system:ro", "system:rw")),
    ("POST", "/system/reload"): need("*", narrow=("system:rw",)),
    # Ductile's own routes (server.go setupRoutes), which our reference does not list: Ductile's scopes
    ("GET", "/system/doctor"): need("system:ro", "system:rw"),
    ("GET", "/system/selfcheck"): need("system:ro", "system:rw"),
    ("GET", "/topology"): need("system:ro", "system:rw"),
    # Prometheus' scrape (services/api/metrics_route.py; the metrics port of a service run alone checks the same)
    ("GET", "/metrics"): need("system:ro", "system:rw"),
    ("GET", "/stopwatch/{plugin}"): need("jobs:ro", narrow=("jobs:status:ro",)),
    ("GET", "/api/health"): OPEN,
    ("POST", "/api/jobs"): need("jobs:rw", work="pipeline: plugin:rw; agent: its tools by authority"),
    ("GET", "/api/jobs"): need("jobs:ro"),
    ("GET", "/api/jobs/{job_id}"): need("jobs:ro"),
    ("POST", "/api/jobs/{job_id}/replay"): need(
        "jobs:rw", work="re-execution: the job's work_scope; agents' tools by authority"
    ),
    ("POST", "/api/prompts"): need("jobs:rw", work="its agents' tools by authority"),
    ("GET", "/api/prompts"): need("jobs:ro"),
    ("GET", "/api/prompts/{prompt_id}"): need("jobs:ro"),
    ("POST", "/api/prompts/{prompt_id}/cancel"): need("jobs:rw"),
    ("POST", "/api/agents/{agent_name}/batch"): need("jobs:rw", work="the agent's tools by authority"),
    ("POST", "/api/batches/{batch_id}/add-tasks"): need("jobs:rw", work="the agent's tools by authority"),
    ("GET", "/api/batches/{batch_id}"): need("jobs:ro"),
    ("GET", "/api/batches"): need("jobs:ro"),
    ("GET", "/api/agents"): need("jobs:ro"),
    ("GET", "/api/agents/{agent_name}/chat"): need("jobs:ro", work="the agent's tools by authority"),
    ("GET", "/api/agents/{agent_name}/tools"): need("jobs:ro"),
    ("GET", "/api/traces"): need("jobs:ro"),
    ("GET", "/api/traces/grouped"): need("jobs:ro"),
    ("GET", "/api/traces/{trace_id}"): need("jobs:ro"),
    ("GET", "/api/metrics"): need("jobs:ro"),
    ("GET", "/api/responses/{task_id}/resolved"): need("jobs:ro"),
    # Laddr's WebSockets: what they stream is what GET /api/traces and /api/prompts/{id} show
    ("GET", "/ws/events"): websocket("jobs:ro"),
    ("GET", "/ws/prompts/{prompt_id}"): websocket("jobs:ro"),
    ("GET", "/ws/batches/{batch_id}"): websocket("jobs:ro"),
    ("GET", "/ws/logs/{container_name}"): websocket("jobs:ro"),
    # the Laddr dialect's description and its Swagger UI (as Laddr's FastAPI built-ins: no auth)
    ("GET", "/api/openapi.json"): OPEN,
    ("GET", "/docs"): OPEN,
    ("GET", "/docs/oauth2-redirect"): OPEN,
    ("GET", "/docs/static/{file}"): OPEN,
    # the operator dashboard's static files (services/api/dashboard.py): no data in them; the page sends
    # the user's token on every API call it makes, which these rules then gate
    ("GET", "/ui"): OPEN,
    ("GET", "/ui/"): OPEN,
    ("GET", "/ui/{file}"): OPEN,
    ("GET", "/api/logs/containers"): need("jobs:ro"),
    ("GET", "/api/logs/containers/{container_name}"): need("jobs:ro"),
    ("POST", WEBHOOK_PATH): WEBHOOK,
    # Ductile's vault management (internal/api/vault.go), mounted only when a vault is loaded
    ("POST", "/vault/principal"): VAULT_ADMIN,
    ("POST", "/vault/secret"): VAULT_ADMIN,
    ("POST", "/vault/secret/roll"): VAULT_ADMIN,
    ("POST", "/vault/secret/revoke"): VAULT_ADMIN,
    ("POST", "/vault/principal/revoke"): VAULT_ADMIN,
    ("POST", "/vault/principal/purge"): VAULT_ADMIN,
    ("POST", "/vault/principal/roll"): VAULT_ADMIN,
    ("POST", RELAY_PATH): RELAY,
}


def route_rule(method: str, path: str) -> Rule | None:
    """The rule of a route by its method and path template (HEAD as GET); None when it has none."""
    return ROUTES.get(("GET" if method == "HEAD" else method, path))


#: the work a Laddr client's requests cause beyond their routes: pipelines (POST /api/jobs) and the
#: agents' tool calls, which may run any plugin command
LADDR_WORK = ("plugin:rw",)


def laddr_default_scopes() -> frozenset[str]:
    """What Laddr's single key grants by default: every /api/* and /ws/* route's scope, plus LADDR_WORK
    (Laddr's key covers everything it serves; `*` would also open Ductile's admin routes)."""
    needed = {
        rule.any_of[0] for (_, path), rule in ROUTES.items() if path.startswith(("/api/", "/ws/")) and rule.any_of
    }
    return frozenset(needed | set(LADDR_WORK))
