"""Every wire name in one place: stream, subject, KV bucket, consumer and header names.

Subjects carry the aggregate id, so one job's history is one subject filter.
Handlers build subjects with these functions, never by formatting strings inline.
"""

from __future__ import annotations

# Streams
COMMANDS = "COMMANDS"
EVENTS = "EVENTS"
WORK = "WORK"
INGEST = "INGEST"

# KV buckets and object stores
KV_DEDUPE = "dedupe"
KV_PLUGIN_STATE = "plugin_state"
KV_AGENTS = "agents"
KV_BREAKERS = "breakers"
KV_TREES = "trees"
#: results of `idempotent: true` tool commands, reused by agents within their tool_cache_ttl
KV_TOOL_CACHE = "tool_cache"
OBJ_RESPONSES = "responses"

# Durable consumer names
DISPATCHER_COMMANDS = "dispatcher-commands"
DISPATCHER_OUTCOMES = "dispatcher-outcomes"
DISPATCHER_INGEST = "dispatcher-ingest"
DISPATCHER_DELAYS = "dispatcher-delays"

# Headers
MSG_ID = "Nats-Msg-Id"
#: an atomic batch (JetStream ADR-50): its id, each message's place in it, and the commit on the last
BATCH_ID = "Nats-Batch-Id"
BATCH_SEQUENCE = "Nats-Batch-Sequence"
BATCH_COMMIT = "Nats-Batch-Commit"
#: optimistic concurrency on one subject: the publish fails unless the subject's last sequence is this
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
#: the subject filter (wildcards allowed) that EXPECTED_LAST_SUBJECT_SEQ is checked against, instead of the subject
EXPECTED_LAST_SUBJECT_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"

ALL_COMMANDS = "cmd.>"
ALL_EVENTS = "evt.>"
ALL_WORK = "work.>"
ALL_DELAYED = "delay.>"
ALL_INGEST = "ingest.>"
ALL_SCHEDULE_EVENTS = "evt.schedule.>"
INGEST_REJECTED = "evt.ingest.rejected"


#: longest subject token (an id, a plugin or command name): keeps every subject far below the
#: nats-server control-line limit (4 KiB), past which the server closes the connection
MAX_TOKEN_LENGTH = 256


def _token(value: str) -> str:
    """Guard a subject token: NATS tokens may not hold '.', '*', '>' or whitespace, nor be over-long."""
    if not value or len(value) > MAX_TOKEN_LENGTH or any(c in value for c in ".*> \t\r\n\x00"):
        raise ValueError(f"invalid subject token: {value!r}")
    return value


def stream_of(subject: str) -> str | None:
    """The stream that stores `subject` (None: one of the KV buckets' or a core subject)."""
    head = subject.partition(".")[0]
    return {"cmd": COMMANDS, "evt": EVENTS, "work": WORK, "delay": WORK, "ingest": INGEST}.get(head)


def job_command(job_id: str, action: str) -> str:
    """cmd.job.<job_id>.<action>, e.g. cmd.job.0192….submit."""
    return f"cmd.job.{_token(job_id)}.{_token(action)}"


def pipeline_command(root_job_id: str) -> str:
    """cmd.job.<root>.run: start a pipeline whose root job is <root>."""
    return job_command(root_job_id, "run")


def job_event(job_id: str, short_type: str) -> str:
    """evt.job.<job_id>.<short_type>, e.g. evt.job.0192….succeeded."""
    return f"evt.job.{_token(job_id)}.{_token(short_type)}"


def job_events(job_id: str) -> str:
    """Filter for every event of one job."""
    return f"evt.job.{_token(job_id)}.>"


def trace_event(job_id: str, short_type: str) -> str:
    return f"evt.trace.{_token(job_id)}.{_token(short_type)}"


def batch_event(batch_id: str, short_type: str) -> str:
    """evt.batch.<batch_id>.<short_type>: a Laddr batch's membership (`tasks_added`), in order."""
    return f"evt.batch.{_token(batch_id)}.{_token(short_type)}"


def plugin_event(plugin: str, short_type: str) -> str:
    return f"evt.plugin.{_token(plugin)}.{_token(short_type)}"


def system_event(short_type: str) -> str:
    return f"evt.system.{_token(short_type)}"


def ingest_event(short_type: str) -> str:
    """evt.ingest.<short_type>: what became of an event from outside (`accepted`, `rejected`)."""
    return f"evt.ingest.{_token(short_type)}"


def schedule_event(plugin: str, schedule_id: str) -> str:
    """evt.schedule.<plugin>.<id>: every decision of one schedule (armed, fired, skipped), in order;
    its last message is the schedule's state."""
    return f"evt.schedule.{_token(plugin)}.{_token(schedule_id)}"


def event_subject(event_type: str, aggregate_id: str) -> str:
    """The subject of an event of `event_type` ("job.succeeded") about `aggregate_id`."""
    family, _, short = event_type.partition(".")
    if family == "job":
        return job_event(aggregate_id, short)
    if family == "trace":
        return trace_event(aggregate_id, short)
    if family == "plugin":
        return plugin_event(aggregate_id, short)
    if family == "batch":
        return batch_event(aggregate_id, short)
    if family == "system":
        return system_event(short)
    if family == "ingest":
        return ingest_event(short)
    raise ValueError(f"no subject family for event type {event_type!r}")


def work(plugin: str, command: str) -> str:
    """work.<plugin>.<command>: a runner mailbox."""
    return f"work.{_token(plugin)}.{_token(command)}"


def delayed_work(plugin: str, command: str) -> str:
    """delay.work.<plugin>.<command>: a work item parked (in the WORK stream) until its due time."""
    return f"delay.work.{_token(plugin)}.{_token(command)}"


def is_delayed(subject: str) -> bool:
    """Whether `subject` is a work item parked for a retry backoff (delay.work.<plugin>.<command>)."""
    return subject.startswith("delay.work.")


def cancel_signal(job_id: str) -> str:
    """ctl.cancel.<job_id>: a plain NATS message telling the runner holding the job to stop it."""
    return f"ctl.cancel.{_token(job_id)}"


ALL_CANCEL_SIGNALS = "ctl.cancel.*"

#: POST /system/reload, phase 1: every reload participant stages the config and answers (plain NATS request)
RELOAD_PREPARE = "ctl.reload.prepare"
#: a refused reload: the participants that staged it drop it and answer
RELOAD_ABORT = "ctl.reload.abort"


def reload_ack(txn: str) -> str:
    """ctl.reload.ack.<txn>: a participant applied the staged config of reload `txn` (phase 2)."""
    return f"ctl.reload.ack.{_token(txn)}"


def plugin_work(plugin: str) -> str:
    """Filter for every work item of one plugin (one pull consumer per plugin)."""
    return f"work.{_token(plugin)}.>"


def runner_consumer(plugin: str) -> str:
    """Durable name of the pull consumer every runner of `plugin` binds to."""
    return f"runner-{_token(plugin)}"


def agent_consumer(agent: str) -> str:
    """Durable name of the pull consumer (work.agent.<agent>) every runner serving `agent` binds to."""
    return f"agent-{_token(agent)}"


def ingest_type(subject: str) -> str:
    """The event type an ingest subject claims: ingest.order.created → order.created."""
    return subject.removeprefix("ingest.")
