"""Ductile's config dialect read into Headrace's: the keys a Ductile operator's files carry are
either translated to what Headrace does with them, or accepted with one warning naming the key
and why it has no effect here. Never a silent drop of something that changes behaviour.

`normalize(doc)` takes the merged, substituted, schema-valid document and returns the document
`config._build` reads (Headrace's own shape) and the warnings. Pure: no I/O.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from services.core import scopes

#: `every:` words Ductile accepts (`ParseInterval`), case-insensitive
_EVERY_WORDS = {"hourly": "1h", "daily": "24h", "weekly": "7d", "monthly": "30d"}
#: `1.5d`, `2w`: Ductile's day and week units (decimals allowed)
_DAYS_WEEKS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dw])\s*$", re.IGNORECASE)
#: Ductile's default schedule command
DEFAULT_SCHEDULE_COMMAND = "poll"

#: top-level keys that have no effect here, and why
_IGNORED_TOP = {
    "log_level": "Ductile ignores a top-level log_level too; set service.log_level",
    "routes": "routes do not route (Ductile's router reads pipelines only); write pipelines with `on:`",
    "state": "state lives in NATS JetStream and Postgres, not a SQLite file; see service.state_dir and database.url",
    "tcc_paths": "macOS TCC paths are not managed by Headrace",
    "accounts": "privilege-separation accounts are not supported; see service.plugin_user",
    "instances": "outbound relay is not supported",
}
_IGNORED_SERVICE = {
    "tick_interval": "schedules fire at their own times (no scheduler tick)",
    "log_format": "logs are always JSON lines",
    "strict_mode": "the config is always validated strictly (unknown keys are errors)",
    "unconfined": "plugins run as service.plugin_user when the runner is root",
    "allow_symlinks": "plugin directories are read as found",
    "plugin_env_passthrough": "plugins get a minimal environment; pass values through plugins.<name>.config",
    "hook_max_depth": "on-hook chains are bounded by each pipeline's max_depth",
    "job_queue_retention": "job rows are kept for service.job_log_retention",
    "job_transitions_retention": "job rows are kept for service.job_log_retention",
    "job_attempts_retention": "job rows are kept for service.job_log_retention",
    "breaker_transitions_retention": "breaker state is kept in the event log",
}
_ADMISSION = {
    "verify_integrity_on_boot": "plugin manifests are validated at every load",
    "fail_on_drift": "plugin manifests are validated at every load",
    "validate_config_on_boot": "the config is always validated strictly (unknown keys are errors)",
    "require_api_auth": "every route but the open discovery ones needs a token",
    "fail_on_sidedoor": "there is no management socket (side door)",
}
_IGNORED_API = {
    "management_socket": "there is no management socket; manage the running gateway over the HTTP API",
    "max_sync_timeout": "synchronous calls wait for their pipeline's `timeout`",
}
_IGNORED_PLUGIN = {
    "run_as": "plugins run as service.plugin_user",
}
_IGNORED_SCHEDULE = {
    "preferred_window": "Ductile parses it without using it",
}
VAULT_KEYS = ("age_key_file", "vault_file")


def every_value(value: Any) -> Any:
    """Ductile's `every:` text in Headrace's duration form (`hourly` → `1h`, `2w` → `14d`)."""
    if not isinstance(value, str):
        return value
    word = _EVERY_WORDS.get(value.strip().lower())
    if word:
        return word
    match = _DAYS_WEEKS.match(value)
    if match:
        number, unit = float(match.group(1)), match.group(2).lower()
        seconds = number * (7 if unit == "w" else 1) * 86400
        return f"{seconds:g}s" if seconds != int(seconds) else f"{int(seconds)}s"
    return value


def vault_settings(secrets: Any) -> dict[str, str]:
    """Ductile's `secrets: {age_key_file, vault_file}` (the vault's files, not secrets; see
    services/core/vault.py `locate`)."""
    if not isinstance(secrets, Mapping):
        return {}
    return {k: str(secrets[k]) for k in VAULT_KEYS if isinstance(secrets.get(k), str)}


def normalize(doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The document in Headrace's shape, and one warning line per Ductile key that has no effect."""
    out = copy.deepcopy(dict(doc))
    warnings: list[str] = []

    def ignore(where: str, why: str) -> None:
        warnings.append(f"{where}: accepted but has no effect in Headrace: {why}")

    def drop(section: dict[str, Any], ignored: Mapping[str, str], prefix: str) -> None:
        """Remove the keys of `ignored` that `section` holds, one warning each."""
        for key, why in ignored.items():
            if key in section:
                section.pop(key)
                ignore(f"{prefix}{key}", why)

    drop(out, _IGNORED_TOP, "")
    service = out.get("service")
    if isinstance(service, dict):
        drop(service, _IGNORED_SERVICE, "service.")
        admission = service.pop("admission", None)
        for key, value in (admission or {}).items():
            if value:
                ignore(f"service.admission.{key}", _ADMISSION.get(key, "no admission gates"))
    api = out.get("api")
    if isinstance(api, dict):
        drop(api, _IGNORED_API, "api.")
        tokens = (api.get("auth") or {}).get("tokens") or []
        for i, token in enumerate(tokens):
            for scope in token.get("scopes") or []:
                if scope not in scopes.KNOWN_SCOPES:
                    ignore(f"api.auth.tokens[{i}].scopes", f"{scope!r} is no scope any route checks")
    database = out.get("database")
    if isinstance(database, dict) and "path" in database:
        database.pop("path")
        ignore("database.path", "state lives in Postgres (database.url), not a SQLite file")
    secrets = out.get("secrets")
    if isinstance(secrets, dict):
        for key in VAULT_KEYS:  # the vault's files, read by config.from_dict (vault_settings), not secrets
            secrets.pop(key, None)
    plugins: dict[str, Any] = out.get("plugins") or {}
    for name, spec in plugins.items():
        if spec is None:
            plugins[name] = spec = {}
        if "enabled" not in spec:
            warnings.append(
                f"plugins.{name}.enabled: not set, so Headrace runs plugin {name!r} "
                "(Ductile leaves a plugin without `enabled: true` off); set enabled: true or false"
            )
        if spec.get("config") is None:
            spec["config"] = {}
        for key, why in _IGNORED_PLUGIN.items():
            if key in spec:
                spec.pop(key)
                ignore(f"plugins.{name}.{key}", why)
        for i, schedule in enumerate(spec.get("schedules") or []):
            schedule.setdefault("command", DEFAULT_SCHEDULE_COMMAND)
            if "every" in schedule:
                schedule["every"] = every_value(schedule["every"])
            for key, why in _IGNORED_SCHEDULE.items():
                if key in schedule:
                    schedule.pop(key)
                    ignore(f"plugins.{name}.schedules[{i}].{key}", why)
    hooks = out.get("webhooks")
    if isinstance(hooks, dict):  # Ductile's map form: {listen, endpoints: [...]}
        out["webhooks"] = list(hooks.get("endpoints") or [])
        if hooks.get("listen"):
            out["webhooks_listen"] = hooks["listen"]  # a second listener for the webhook paths
    return out, warnings
