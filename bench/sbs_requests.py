"""The one list of requests the side-by-side harness sends to both Laddr 0.9.6 and Headrace, in
order: every route of the conformance doc's §1.1 with good and bad inputs, auth variants, and the
WebSockets. Steps that only wait (for a run to finish, for the projector) are not compared.

Paths and bodies may name values an earlier answer gave on the same side (`{job_id}`); `save`
says which answer field feeds which name. A value a side never produced (e.g. a batch id from a
route Headrace lacks) is filled with `missing-<name>`, and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: auth modes: how the request authenticates (`KEY` is the deployment's key / Headrace's token)
BEARER, X_API_KEY, NONE = "bearer", "x-api-key", "none"
WRONG_X, WRONG_X_RIGHT_BEARER, LOWER_BEARER, QUERY_KEY = (
    "wrong-x-api-key",
    "wrong-x+bearer",
    "lowercase-bearer",
    "query",
)


@dataclass
class Req:
    theme: str
    name: str
    method: str = "GET"
    path: str = "/"
    json: Any = None
    data: str | None = None  # raw body (malformed JSON etc.), sent as application/json
    auth: str = BEARER
    #: "keyed" = the Laddr deployment with LADDR_API_KEY; "open" = the one without
    deployment: str = "keyed"
    save: dict[str, str] = field(default_factory=dict)  # context name -> dotted path in the answer
    headers: dict[str, str] = field(default_factory=dict)
    ws: bool = False
    ws_seconds: float = 2.0
    #: for /ws/events: a wait=false chat sent once the socket is open, so there is a trace to see
    ws_trigger: bool = False
    #: a filter to verify on both sides: every item of list `each[0]` has `each[1]` == `each[2]` (may name `{ctx}`)
    each: tuple[str, str, str] | None = None
    #: what issue 12 decides for this request where it deliberately keeps a difference (shown in the report)
    issue12: str = ""


@dataclass
class Wait:
    """Poll `path` until the answer's `status` is final (or `seconds` pass); nothing is compared."""

    path: str
    seconds: float = 30.0
    then_sleep: float = 0.0


@dataclass
class Sleep:
    seconds: float


Step = Req | Wait | Sleep

JOB = {"pipeline_name": "echo", "inputs": {"query": "add 2 and 3"}}
BARE_ARRAY = "reference wins: a bare array from GET /api/jobs (so the body shape stays); apply `offset`"
QUEUED = "item 3: without wait, the reference's queued answer (`status: queued`, `created_at`), with Laddr's 200"
WAITED = "item 3: the finished job with `result`, `error`, `duration_ms`, `agent`"
COMPLETED_CHAT = "reference wins: a completed chat carries `result` **and** `response`"
CHAT_200 = "item 2: 200 also for wait=false and timeout"
WORDS = "reference wins: `completed`/`failed` as status words"
PROMPT = {"prompt_name": "echo", "inputs": {"query": "add 2 and 3"}}
CHAT = "/api/agents/echo/chat"


def steps() -> list[Step]:
    s: list[Step] = []
    r = s.append
    # a table of requests reads better one request a line
    # fmt: off

    # --- root, health, docs (no auth) ---
    r(Req("docs", "GET / (root)", path="/", auth=NONE))
    r(Req("docs", "GET /api/health", path="/api/health", auth=NONE))
    r(Req("docs", "GET /docs", path="/docs", auth=NONE))
    r(Req("docs", "GET /redoc", path="/redoc", auth=NONE))
    r(Req("docs", "GET /docs/oauth2-redirect", path="/docs/oauth2-redirect", auth=NONE))
    r(Req("docs", "GET /openapi.json", path="/openapi.json", auth=NONE))

    # --- auth on the keyed deployment ---
    r(Req("auth", "GET /api/jobs, no credentials", path="/api/jobs", auth=NONE))
    r(Req("auth", "GET /api/jobs, X-API-Key: right", path="/api/jobs", auth=X_API_KEY))
    r(Req("auth", "GET /api/jobs, Authorization: Bearer right", path="/api/jobs", auth=BEARER, issue12=BARE_ARRAY))
    r(Req("auth", "GET /api/jobs, X-API-Key: wrong", path="/api/jobs", auth=WRONG_X))
    r(Req("auth", "GET /api/jobs, X-API-Key wrong + Bearer right", path="/api/jobs", auth=WRONG_X_RIGHT_BEARER))
    r(Req("auth", "GET /api/jobs, `bearer` in lower case", path="/api/jobs", auth=LOWER_BEARER))
    r(Req("auth", "GET /api/jobs?api_key=right (query)", path="/api/jobs", auth=QUERY_KEY))
    r(Req("auth", "GET /api/agents, X-API-Key: right", path="/api/agents", auth=X_API_KEY))
    r(Req("auth", "GET /api/metrics, X-API-Key: right", path="/api/metrics", auth=X_API_KEY))
    r(Req("auth", "POST /api/jobs {} with no credentials (401 before 422)", "POST", "/api/jobs", json={}, auth=NONE))
    r(Req("auth", "POST /api/jobs malformed JSON, no credentials (422 before 401)", "POST", "/api/jobs",
          data="{not json", auth=NONE))
    r(Req("auth", "OPTIONS /api/jobs pre-flight (CORS), no credentials", "OPTIONS", "/api/jobs", auth=NONE,
          headers={"Origin": "http://example.test", "Access-Control-Request-Method": "POST",
                   "Access-Control-Request-Headers": "x-api-key,content-type"}))
    r(Req("auth", "GET /api/health with Origin (CORS headers)", path="/api/health", auth=NONE,
          headers={"Origin": "http://example.test"}))
    # the keyless deployment: Laddr's default is auth off
    r(Req("auth", "keyless deployment: GET /api/jobs, no credentials", path="/api/jobs", auth=NONE, deployment="open"))
    r(Req("auth", "keyless deployment: GET /api/agents, no credentials", path="/api/agents", auth=NONE,
          deployment="open"))
    r(Req("auth", "keyless deployment: GET /api/metrics, no credentials", path="/api/metrics", auth=NONE,
          deployment="open"))
    r(Req("auth", "keyless deployment: POST /api/jobs, no credentials", "POST", "/api/jobs", json=JOB, auth=NONE,
          deployment="open"))

    # --- jobs ---
    r(Req("jobs", "POST /api/jobs (echo)", "POST", "/api/jobs", json=JOB, save={"job_id": "job_id"}, issue12=QUEUED))
    r(Req("jobs", "POST /api/jobs?wait=true", "POST", "/api/jobs?wait=true", json=JOB, issue12=WAITED))
    r(Req("jobs", 'POST /api/jobs {"wait": true} in body', "POST", "/api/jobs", json={**JOB, "wait": True},
          issue12=WAITED))
    r(Req("jobs", "POST /api/jobs with an unknown extra field", "POST", "/api/jobs", json={**JOB, "color": "red"},
          issue12=QUEUED))
    r(Req("errors", "POST /api/jobs missing inputs", "POST", "/api/jobs", json={"pipeline_name": "echo"}))
    r(Req("errors", "POST /api/jobs missing pipeline_name", "POST", "/api/jobs", json={"inputs": {}}))
    r(Req("errors", "POST /api/jobs inputs is a string", "POST", "/api/jobs",
          json={"pipeline_name": "echo", "inputs": "add"}))
    r(Req("errors", "POST /api/jobs pipeline_name is a number", "POST", "/api/jobs",
          json={"pipeline_name": 5, "inputs": {}}))
    r(Req("errors", "POST /api/jobs no body", "POST", "/api/jobs"))
    r(Req("errors", "POST /api/jobs malformed JSON", "POST", "/api/jobs", data="{not json"))
    r(Req("errors", "POST /api/jobs body is a JSON array", "POST", "/api/jobs", json=[1, 2]))
    r(Req("errors", "POST /api/jobs unknown agent `ghost`", "POST", "/api/jobs",
          json={"pipeline_name": "ghost", "inputs": {"q": 1}}))
    s.append(Wait("/api/jobs/{job_id}", then_sleep=1.0))
    r(Req("jobs", "GET /api/jobs/{job_id}", path="/api/jobs/{job_id}", issue12=WORDS))
    r(Req("errors", "GET /api/jobs/<unknown id>", path="/api/jobs/00000000-0000-4000-8000-000000000000"))
    r(Req("jobs", "GET /api/jobs", path="/api/jobs", issue12=BARE_ARRAY))
    r(Req("jobs", "GET /api/jobs?limit=2&offset=1", path="/api/jobs?limit=2&offset=1", issue12=BARE_ARRAY))
    r(Req("errors", "GET /api/jobs?limit=abc", path="/api/jobs?limit=abc"))
    r(Req("errors", "GET /api/jobs?offset=-1", path="/api/jobs?offset=-1"))
    r(Req("status codes", "PUT /api/jobs (wrong method)", "PUT", "/api/jobs", json=JOB))
    r(Req("status codes", "DELETE /api/jobs/{job_id} (wrong method)", "DELETE", "/api/jobs/{job_id}"))
    r(Req("status codes", "GET /api/nothing (unknown path)", path="/api/nothing"))

    # --- replay ---
    r(Req("replay", "POST /api/jobs/{job_id}/replay, no body", "POST", "/api/jobs/{job_id}/replay",
          issue12="item 1/4: no body is accepted and means a stored-result replay"))
    r(Req("replay", "POST replay {}", "POST", "/api/jobs/{job_id}/replay", json={},
          issue12="item 4: stored-result replay by default (`replayed`, `original_job_id`, same `job_id`)"))
    r(Req("replay", 'POST replay {"reexecute": false}', "POST", "/api/jobs/{job_id}/replay", json={"reexecute": False}))
    r(Req("replay", 'POST replay {"reexecute": true}', "POST", "/api/jobs/{job_id}/replay",
          json={"reexecute": True}, issue12="item 4: re-execution as a new job linked to the original "
          "(Laddr 0.9.6 answers 500 here: its re-execute is broken)"))
    r(Req("replay", 'POST replay {"request": true}', "POST", "/api/jobs/{job_id}/replay", json={"request": True},
          issue12="item 1/4: the reference's `request: true` re-executes"))
    r(Req("replay", 'POST replay {"job_id": …, "request": true} (the doc\'s form)', "POST",
          "/api/jobs/{job_id}/replay", json={"job_id": "{job_id}", "request": True},
          issue12="item 1/4: the reference's `request: true` re-executes; `job_id` in the body is ignored"))
    r(Req("replay", 'POST replay {"reexecute": "maybe"} (wrong type)', "POST", "/api/jobs/{job_id}/replay",
          json={"reexecute": "maybe"}))
    r(Req("replay", "POST replay of an unknown job {}", "POST",
          "/api/jobs/00000000-0000-4000-8000-000000000000/replay", json={}))

    # --- prompts ---
    r(Req("prompts", "POST /api/prompts (single)", "POST", "/api/prompts", json=PROMPT,
          save={"prompt_id": "prompt_id"}))
    r(Req("prompts", "POST /api/prompts sequential [echo, echo]", "POST", "/api/prompts",
          json={**PROMPT, "mode": "sequential", "agents": ["echo", "echo"]}, save={"seq_prompt_id": "prompt_id"}))
    r(Req("prompts", "POST /api/prompts sequential, no agents", "POST", "/api/prompts",
          json={**PROMPT, "mode": "sequential"}))
    r(Req("prompts", "POST /api/prompts unknown agent `ghost`", "POST", "/api/prompts",
          json={"prompt_name": "ghost", "inputs": {"q": 1}}, save={"ghost_prompt_id": "prompt_id"}))
    r(Req("errors", "POST /api/prompts missing inputs", "POST", "/api/prompts", json={"prompt_name": "echo"}))
    r(Req("errors", "POST /api/prompts inputs is a string", "POST", "/api/prompts",
          json={"prompt_name": "echo", "inputs": "x"}))
    r(Req("errors", "POST /api/prompts agents is a string", "POST", "/api/prompts",
          json={**PROMPT, "mode": "sequential", "agents": "echo"}))
    r(Req("prompts", "POST /api/prompts (slow agent, to cancel)", "POST", "/api/prompts",
          json={"prompt_name": "slow", "inputs": {"query": "take your time"}}, save={"slow_prompt_id": "prompt_id"}))
    r(Req("prompts", "POST /api/prompts/{slow_prompt_id}/cancel (running)", "POST",
          "/api/prompts/{slow_prompt_id}/cancel"))
    r(Req("prompts", "POST /api/prompts/<unknown id>/cancel", "POST",
          "/api/prompts/00000000-0000-4000-8000-000000000000/cancel"))
    s.append(Wait("/api/prompts/{prompt_id}"))
    s.append(Wait("/api/prompts/{seq_prompt_id}"))
    s.append(Wait("/api/prompts/{ghost_prompt_id}"))
    s.append(Wait("/api/prompts/{slow_prompt_id}", seconds=15, then_sleep=1.0))
    r(Req("prompts", "GET /api/prompts/{prompt_id}", path="/api/prompts/{prompt_id}", issue12=WORDS))
    r(Req("prompts", "GET /api/prompts/{seq_prompt_id} (sequential)", path="/api/prompts/{seq_prompt_id}"))
    r(Req("prompts", "GET /api/prompts/{ghost_prompt_id} (agent missing)", path="/api/prompts/{ghost_prompt_id}"))
    r(Req("prompts", "GET /api/prompts/{slow_prompt_id} (canceled)", path="/api/prompts/{slow_prompt_id}"))
    r(Req("prompts", "POST /api/prompts/{prompt_id}/cancel (already completed)", "POST",
          "/api/prompts/{prompt_id}/cancel"))
    r(Req("errors", "GET /api/prompts/<unknown id>", path="/api/prompts/00000000-0000-4000-8000-000000000000"))
    r(Req("prompts", "GET /api/prompts?limit=5", path="/api/prompts?limit=5"))
    r(Req("prompts", "GET /api/prompts?limit=5&offset=1", path="/api/prompts?limit=5&offset=1"))
    r(Req("errors", "GET /api/prompts?limit=x", path="/api/prompts?limit=x"))
    r(Req("jobs", "GET /api/jobs/{prompt_id} (a prompt's twin job row)", path="/api/jobs/{prompt_id}"))

    # --- agents ---
    r(Req("agents", "GET /api/agents", path="/api/agents"))
    r(Req("agents", "GET /api/agents/echo/tools", path="/api/agents/echo/tools"))
    r(Req("agents", "GET /api/agents/ghost/tools (unknown agent)", path="/api/agents/ghost/tools"))

    # --- chat ---
    r(Req("chat", "GET chat, JSON body {message}", path=CHAT, json={"message": "hello"}, issue12=COMPLETED_CHAT))
    r(Req("chat", "GET chat, JSON body {message, wait: true, timeout: 10}", path=CHAT,
          json={"message": "hello", "wait": True, "timeout": 10}, issue12=COMPLETED_CHAT))
    r(Req("chat", "GET chat, query ?message=hello", path=CHAT + "?message=hello",
          issue12="item 1: chat reads the JSON body or the query string; " + COMPLETED_CHAT))
    r(Req("chat", "GET chat, JSON body wait:false", path=CHAT, json={"message": "later", "wait": False},
          save={"chat_task_id": "task_id"}, issue12=CHAT_200))
    # saves the same name as the body form: each side resolves the task id of whichever form it accepted
    r(Req("chat", "GET chat, query ?message=later&wait=false", path=CHAT + "?message=later&wait=false",
          save={"chat_task_id": "task_id"},
          issue12="item 1: the query string is read too; " + CHAT_200))
    r(Req("chat", "GET chat (slow agent), JSON body timeout:1", path="/api/agents/slow/chat",
          json={"message": "hurry", "timeout": 1}, issue12=CHAT_200))
    r(Req("chat", "GET chat (slow agent), query ?message=hurry&timeout=1",
          path="/api/agents/slow/chat?message=hurry&timeout=1",
          issue12="item 1: the query string is read too; " + CHAT_200))
    r(Req("chat", "GET chat, JSON body timeout:0", path=CHAT, json={"message": "now", "timeout": 0}))
    r(Req("chat", "GET chat, JSON body {message} + query ?message= (both)", path=CHAT + "?message=from-query",
          json={"message": "from-body"}, issue12=COMPLETED_CHAT))
    r(Req("errors", "GET chat, no body and no query", path=CHAT))
    r(Req("errors", "GET chat, JSON body without message", path=CHAT, json={"wait": True}))
    r(Req("errors", "GET chat, message is a number", path=CHAT, json={"message": 123}))
    r(Req("errors", 'GET chat, timeout "abc"', path=CHAT, json={"message": "x", "timeout": "abc"}))
    r(Req("errors", "GET chat, malformed JSON body", path=CHAT, data="{not json"))
    r(Req("status codes", "POST chat (wrong method)", "POST", CHAT, json={"message": "hello"}))
    r(Req("chat", "GET chat to unknown agent `ghost`, timeout:1", path="/api/agents/ghost/chat",
          json={"message": "anyone?", "timeout": 1}))
    s.append(Sleep(2.0))
    r(Req("chat", "GET /api/responses/{chat_task_id}/resolved", path="/api/responses/{chat_task_id}/resolved"))
    r(Req("errors", "GET /api/responses/<unknown>/resolved", path="/api/responses/no-such-task/resolved"))

    # --- batches ---
    r(Req("batches", "POST /api/agents/echo/batch (2 tasks)", "POST", "/api/agents/echo/batch",
          json={"tasks": [{"message": "a"}, {"message": "b"}]}, save={"batch_id": "batch_id"}))
    r(Req("batches", "POST /api/agents/echo/batch wait:true (1 task)", "POST", "/api/agents/echo/batch",
          json={"tasks": [{"message": "c"}], "wait": True}, save={"done_batch_id": "batch_id"}))
    r(Req("errors", "POST batch missing tasks", "POST", "/api/agents/echo/batch", json={}))
    r(Req("errors", "POST batch tasks is an object", "POST", "/api/agents/echo/batch", json={"tasks": {"a": 1}}))
    r(Req("batches", "POST /api/agents/slow/batch (1 task, still running)", "POST", "/api/agents/slow/batch",
          json={"tasks": [{"message": "slow one"}]}, save={"slow_batch_id": "batch_id"}))
    r(Req("batches", "POST /api/batches/{slow_batch_id}/add-tasks (running batch)", "POST",
          "/api/batches/{slow_batch_id}/add-tasks", json={"agent_name": "echo", "tasks": [{"message": "d"}]}))
    r(Req("batches", "POST add-tasks wait:true (running batch)", "POST", "/api/batches/{slow_batch_id}/add-tasks",
          json={"agent_name": "echo", "tasks": [{"message": "d2"}], "wait": True}))
    r(Req("batches", "POST add-tasks to a completed batch", "POST", "/api/batches/{done_batch_id}/add-tasks",
          json={"agent_name": "echo", "tasks": [{"message": "e"}]}))
    r(Req("errors", "POST add-tasks to an unknown batch", "POST", "/api/batches/no-such-batch/add-tasks",
          json={"agent_name": "echo", "tasks": [{"message": "f"}]}))
    r(Req("errors", "POST add-tasks missing agent_name", "POST", "/api/batches/{slow_batch_id}/add-tasks",
          json={"tasks": [{"message": "g"}]}))
    s.append(Sleep(4.0))
    r(Req("batches", "GET /api/batches/{batch_id}", path="/api/batches/{batch_id}"))
    r(Req("batches", "GET /api/batches/{slow_batch_id} (tasks added)", path="/api/batches/{slow_batch_id}"))
    r(Req("batches", "GET /api/batches/{done_batch_id} (waited)", path="/api/batches/{done_batch_id}"))
    r(Req("errors", "GET /api/batches/<unknown>", path="/api/batches/no-such-batch"))
    r(Req("batches", "GET /api/batches?limit=5", path="/api/batches?limit=5"))

    # --- traces ---
    r(Req("traces", "GET /api/traces?job_id={job_id}", path="/api/traces?job_id={job_id}",
          save={"trace_id": "traces[event_type=task_start].id"}, each=("traces", "job_id", "{job_id}")))
    r(Req("traces", "GET /api/traces?job_id={job_id}&limit=1", path="/api/traces?job_id={job_id}&limit=1",
          issue12="conformance §8.3 #15: apply `limit` with `job_id` only when given explicitly (Laddr ignores it)"))
    r(Req("traces", "GET /api/traces?limit=5", path="/api/traces?limit=5"))
    r(Req("traces", "GET /api/traces?agent_name=echo&limit=5", path="/api/traces?agent_name=echo&limit=5",
          each=("traces", "agent_name", "echo")))
    r(Req("traces", "GET /api/traces?agent=echo&limit=5", path="/api/traces?agent=echo&limit=5", each=("traces", "agent_name", "echo"),
          issue12="item 1: `agent` filters like `agent_name`"))
    r(Req("traces", "GET /api/traces?agent_name=ghost", path="/api/traces?agent_name=ghost"))
    r(Req("traces", "GET /api/traces?agent=ghost", path="/api/traces?agent=ghost",
          issue12="item 1: `agent` filters like `agent_name`, so an empty list is the intended answer"))
    r(Req("errors", "GET /api/traces?limit=abc", path="/api/traces?limit=abc"))
    r(Req("traces", "GET /api/traces/grouped?limit=3", path="/api/traces/grouped?limit=3"))
    r(Req("traces", "GET /api/traces/{trace_id}", path="/api/traces/{trace_id}"))
    r(Req("errors", "GET /api/traces/999999999 (unknown)", path="/api/traces/999999999"))
    r(Req("errors", "GET /api/traces/abc (not a number)", path="/api/traces/abc"))

    # --- metrics, logs ---
    r(Req("metrics", "GET /api/metrics", path="/api/metrics",
          issue12="item 6: computed correctly (the miscounts of §3.3 not copied); values may differ"))
    r(Req("metrics", "GET /api/logs/containers", path="/api/logs/containers",
          issue12="item 5: container-log routes may answer 501 with a reason"))
    r(Req("metrics", "GET /api/logs/containers/api", path="/api/logs/containers/api",
          issue12="item 5: container-log routes may answer 501 with a reason"))

    # --- WebSockets ---
    r(Req("ws", "WS /ws/events?api_key=right (+ a chat meanwhile)", path="/ws/events", auth=QUERY_KEY, ws=True,
          ws_seconds=3.0, ws_trigger=True))
    r(Req("ws", "WS /ws/events, X-API-Key header", path="/ws/events", auth=X_API_KEY, ws=True, ws_seconds=1.0))
    r(Req("ws", "WS /ws/events, Bearer header", path="/ws/events", auth=BEARER, ws=True, ws_seconds=1.0))
    r(Req("ws", "WS /ws/events, no credentials", path="/ws/events", auth=NONE, ws=True, ws_seconds=1.0))
    r(Req("ws", "WS /ws/prompts/{prompt_id} (completed)", path="/ws/prompts/{prompt_id}", auth=QUERY_KEY, ws=True))
    r(Req("ws", "WS /ws/prompts/<unknown>", path="/ws/prompts/00000000-0000-4000-8000-000000000001", auth=QUERY_KEY,
          ws=True, ws_seconds=1.5))
    r(Req("ws", "WS /ws/batches/{slow_batch_id}", path="/ws/batches/{slow_batch_id}", auth=QUERY_KEY, ws=True,
          ws_seconds=1.5))
    r(Req("ws", "WS /ws/batches/<unknown>", path="/ws/batches/no-such-batch", auth=QUERY_KEY, ws=True, ws_seconds=1.5))
    r(Req("ws", "WS /ws/logs/api", path="/ws/logs/api", auth=QUERY_KEY, ws=True, ws_seconds=1.5))
    # fmt: on
    return s


def requests() -> list[Req]:
    return [x for x in steps() if isinstance(x, Req)]
