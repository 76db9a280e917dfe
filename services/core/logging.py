"""structlog set-up: JSON lines on stderr, constant event names; `job_context` binds a job's ids (job_id,
correlation_id, plugin, command) onto the lines logged while handling it, as the API binds request_id."""

from __future__ import annotations

import logging
import sys
from contextlib import AbstractContextManager

import structlog


def configure(level: str = "info", *, json: bool = True) -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(message)s")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)  # the wrapper_class set above
    return logger


def job_context(
    job_id: str | None, *, correlation_id: str | None = None, plugin: object = None, command: object = None
) -> AbstractContextManager[None]:
    """Binds the job a piece of work concerns onto every log line logged inside it (structlog contextvars):
    `job_id`, `correlation_id` (the job's own id when it has none, as the job row says), and `plugin` and
    `command` when they are known strings."""
    return structlog.contextvars.bound_contextvars(
        **job_ids(job_id, correlation_id=correlation_id, plugin=plugin, command=command)
    )


def bind_job(
    job_id: str | None, *, correlation_id: str | None = None, plugin: object = None, command: object = None
) -> None:
    """`job_context` to the end of the current task (for a task that handles one job's message only: a task
    runs in a copy of its creator's context, so nothing leaks to other work)."""
    structlog.contextvars.bind_contextvars(
        **job_ids(job_id, correlation_id=correlation_id, plugin=plugin, command=command)
    )


def job_ids(
    job_id: str | None, *, correlation_id: str | None = None, plugin: object = None, command: object = None
) -> dict[str, str]:
    """The keys `job_context` binds: the known ones, as strings."""
    ids = {"job_id": job_id, "correlation_id": correlation_id or job_id, "plugin": plugin, "command": command}
    return {k: v for k, v in ids.items() if isinstance(v, str) and v}
