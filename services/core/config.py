"""Config loader: YAML 1.2 (Ductile's shape, services/core/yamlio.py) → `${ENV}` substitution in the
parsed scalar values → includes → schema check (naming file, line and key) → Ductile's dialect read
into Headrace's (services/core/ductile_config.py) → a frozen `Config`. Reads the process environment
as captured at start (services/core/environment.py).

Merging of included files: maps merge key by key (later wins), arrays append, scalars replace.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dotenv
import orjson

from services.core import agents as agents_mod
from services.core import catalog, ductile_config, durations, environment, errors, pipelines, resources, schemas, yamlio
from services.core import relay as relay_mod
from services.core import schedules as schedules_mod
from services.core import scopes as scopes_mod
from services.core import vault as vault_mod
from services.core import webhooks as webhooks_mod

#: the bundled plugins (echo, echo_py): the repo's plugins/, or the wheel's copy (services/core/resources.py)
DEFAULT_PLUGIN_ROOT = resources.bundled("plugins")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

DEFAULT_TIMEOUTS_S = {"poll": 60.0, "handle": 120.0, "health": 10.0, "init": 30.0}
DEFAULT_COMMAND_TIMEOUT_S = 120.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Token:
    token: str
    scopes: frozenset[str]
    name: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = 4
    backoff_base_s: float = 30.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CircuitBreaker:
    threshold: int = 3
    reset_after_s: float = 1800.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PluginConfig:
    name: str
    enabled: bool = True
    #: None = take it from the manifest (concurrency_safe → max_workers, else 1)
    parallelism: int | None = None
    notify_on_complete: bool = False
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    secrets: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    retry: RetryPolicy = RetryPolicy()
    timeouts_s: Mapping[str, float] = dataclasses.field(default_factory=dict)
    schedules: tuple[Mapping[str, Any], ...] = ()
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    #: Ductile: the vault principal whose secrets the plugin gets in the request (default: its name)
    vault_principal: str | None = None
    #: Ductile: a job fails when the principal is not in the vault (instead of running without secrets)
    requires_vault: bool = False

    @property
    def principal(self) -> str:
        return self.vault_principal or self.name

    def timeout_s(self, command: str) -> float:
        if command in self.timeouts_s:
            return self.timeouts_s[command]
        return DEFAULT_TIMEOUTS_S.get(command, DEFAULT_COMMAND_TIMEOUT_S)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ApiLimits:
    """`api.limits`: what protects one API process from slow, idle or greedy clients."""

    #: a connection must send a complete request head within this (from its first byte, or from opening)
    header_timeout_s: float = 10.0
    #: a keep-alive connection with no request in flight is closed after this
    idle_timeout_s: float = 75.0
    #: open connections per API process; beyond it new ones get a 503 and are closed at once
    max_connections: int = 4096
    #: concurrent GET /events streams per token
    sse_per_token: int = 16
    #: requests per second per token (or per client address without a valid token); 0 = no rate limit
    rate_per_second: float = 0.0
    #: bucket size: requests a client may make at once before the rate applies (default: 2 s worth, min 1)
    rate_burst: int = 0


#: the environment variable Laddr reads its key from
LADDR_KEY_VAR = "LADDR_API_KEY"
#: where Laddr's dashboard runs by default (its GET / says so)
LADDR_DASHBOARD = "http://localhost:5173"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LaddrApi:
    """`api.laddr`: Laddr's single key (`api_key`, else $LADDR_API_KEY) becomes the token `laddr` with
    `scopes`; `open` (`auth: none`) lets Laddr's paths act with `scopes` for a request without credentials."""

    api_key: str | None = None
    scopes: frozenset[str] = frozenset()
    open: bool = False
    #: GET /'s `dashboard`: where a Laddr dashboard using this API runs (Laddr's default)
    dashboard: str = LADDR_DASHBOARD
    #: GET /api/jobs as the reference's bare array or Laddr's {"jobs", "limit", "offset"}
    jobs_list: str = "array"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    max_concurrent_sync: int = 10
    max_body_bytes: int = 1024 * 1024
    limits: ApiLimits = ApiLimits()
    tokens: tuple[Token, ...] = ()
    #: Ductile's `api.allowed_origins`: origins that get CORS headers (`*`: any, without credentials)
    allowed_origins: tuple[str, ...] = ()
    laddr: LaddrApi = LaddrApi()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    #: the file it was loaded from (None when built from a dict)
    path: Path | None
    service_name: str = "headrace"
    log_level: str = "info"
    dedupe_ttl_s: float = 86400.0
    job_log_retention_s: float = 30 * 86400.0
    max_workers: int = max(1, (os.cpu_count() or 2) - 1)
    #: a work item's lease: runners heartbeat within it; a dead runner's job is redelivered after it
    work_lease_s: float = 30.0
    #: how often runners write their presence (and their agents') to the agents KV bucket
    heartbeat_interval_s: float = 5.0
    #: `service.leader_lease`: how long the active dispatcher's (and projector's) lease lasts unrenewed …
    leader_lease_ttl_s: float = 5.0
    #: … and how often its holder renews it (standbys poll at half this interval)
    leader_lease_renew_s: float = 1.0
    #: who subprocess plugins run as when the runner is root (None: headrace-plugin, else nobody)
    plugin_user: str | None = None
    state_dir: Path = Path(".state")
    plugin_roots: tuple[Path, ...] = (DEFAULT_PLUGIN_ROOT,)
    api: ApiConfig = ApiConfig()
    plugins: Mapping[str, PluginConfig] = dataclasses.field(default_factory=dict)
    pipelines: tuple[Mapping[str, Any], ...] = ()
    webhooks: tuple[Mapping[str, Any], ...] = ()
    #: Ductile's `remote_ingress` (services.core.relay.Ingress), None when not configured
    remote_ingress: Any = None
    #: Ductile's `webhooks.listen`: a second listener serving only the webhook paths (host, port)
    webhooks_listen: tuple[str, int] | None = None
    #: webhook name → its HMAC secret, resolved at load from `secret_ref` (the vault, a `secrets:` entry or an env var)
    webhook_secrets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    agents: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    offload_threshold_bytes: int = 100 * 1024
    offload_bucket: str = "laddr"
    nats_url: str | None = None
    nats_replicas: int = 1
    nats_sync_interval: str = "always"
    database_url: str | None = None
    #: the merged document after substitution, before defaults (for /config/view)
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: the compiled pipelines (services.core.pipelines.Compiled), validated against the plugin catalog
    routes: Any = None
    #: the plugin catalog (services.core.catalog.Catalog) scanned when this config was loaded: every
    #: service serves from it, and it is part of the fingerprint, so a reload picks up new plugin dirs
    catalog: Any = None
    #: tokens the process added at start (e.g. `headrace up`'s state-dir admin token); kept across reloads
    runtime_tokens: tuple[Token, ...] = ()
    #: one line per key that is accepted but has no effect here (Ductile's keys), or that `up` would trip on
    warnings: tuple[str, ...] = ()
    #: Ductile's age vault (services.core.vault.Vault) when the config has one (`secrets.vault_file`)
    vault: Any = dataclasses.field(default=None, compare=False, repr=False)
    #: every plugin's schedules (services.core.schedules.Schedule), parsed from the normalised document
    #: (Ductile's `every: daily`, a schedule without `command`), not from `raw`
    schedules: tuple[Any, ...] = ()

    def with_runtime_token(self, token: Token) -> Config:
        """This config plus a token that does not come from the file."""
        if any(t.token == token.token for t in self.api.tokens):
            return self
        return dataclasses.replace(
            self,
            api=dataclasses.replace(self.api, tokens=(*self.api.tokens, token)),
            runtime_tokens=(*self.runtime_tokens, token),
        )

    def plugin(self, name: str) -> PluginConfig:
        """The plugin's config; a plugin found on disk but absent from the file runs with defaults."""
        return self.plugins.get(name) or PluginConfig(name=name)


def substitute_env(text: str, env: Mapping[str, str], *, where: str) -> str:
    """Replace `${VAR}` and `${VAR:-default}` in one scalar; an unset variable without default is an
    error naming `where` (file, line and key). The value is inserted as is: it is never parsed again."""

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise errors.ConfigError(f"{where}: environment variable ${{{name}}} is not set")

    return _ENV_REF.sub(replace, text)


#: sections whose strings are never substituted: they are read before the environment is complete
_NOT_SUBSTITUTED = ("include", "environment_vars")


def substitute_values(
    doc: Any, env: Mapping[str, str], *, file: Path, lines: yamlio.Lines, path: tuple[str | int, ...] = ()
) -> Any:
    """`doc` with `${VAR}` substituted in every string value (never in keys, never in the raw text)."""
    if isinstance(doc, dict):
        return {
            k: v
            if not path and k in _NOT_SUBSTITUTED
            else substitute_values(v, env, file=file, lines=lines, path=(*path, k))
            for k, v in doc.items()
        }
    if isinstance(doc, list):
        return [substitute_values(v, env, file=file, lines=lines, path=(*path, i)) for i, v in enumerate(doc)]
    if isinstance(doc, str) and "${" in doc:
        return substitute_env(doc, env, where=_where(file, lines, path))
    return doc


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _where(file: Path, lines: yamlio.Lines, path: tuple[str | int, ...]) -> str:
    """`<file>:<line>: <key>`, the line of the deepest part of `path` the file has."""
    for n in range(len(path), 0, -1):
        line = lines.get(path[:n])
        if line is not None:
            return f"{file}:{line}: {_dotted(path)}"
    return f"{file}: {_dotted(path)}"


def load_env_file(path: Path) -> dict[str, str]:
    """A `.env` file read by python-dotenv (quotes, `export `, comments, multi-line values). Values are
    taken verbatim: no `${VAR}` expansion inside them, so a secret survives byte for byte."""
    try:
        values = dotenv.dotenv_values(path, interpolate=False)
    except OSError as exc:
        raise errors.ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return {k: v for k, v in values.items() if v is not None}


#: maps whose entries a later file replaces whole, as Ductile's deepMergeConfig does for plugins.<name>
_REPLACED_ENTRIES = frozenset({("plugins",)})


def merge(base: Any, extra: Any, path: tuple[str, ...] = ()) -> Any:
    """Maps merge key by key (later wins), arrays append, scalars replace; a `plugins.<name>` entry given
    again replaces the earlier one as a whole (Ductile: no per-field merge of a plugin)."""
    if isinstance(base, dict) and isinstance(extra, dict):
        out = dict(base)
        for key, value in extra.items():
            replace = path in _REPLACED_ENTRIES or key not in base
            out[key] = value if replace else merge(base[key], value, (*path, str(key)))
        return out
    if isinstance(base, list) and isinstance(extra, list):
        return base + extra
    return extra


@dataclasses.dataclass(frozen=True, slots=True)
class _File:
    path: Path
    doc: dict[str, Any]
    lines: yamlio.Lines


def _parse_file(path: Path) -> tuple[dict[str, Any], yamlio.Lines]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise errors.ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        doc, lines = yamlio.load(text)
    except yamlio.YAMLError as exc:
        raise errors.ConfigError(f"{path}: {yamlio.problem(exc)}") from None
    doc = {} if doc is None else doc
    if not isinstance(doc, dict):
        raise errors.ConfigError(f"{path}: the top level must be a mapping")
    return doc, lines


def _read_yaml(path: Path, env: dict[str, str], files: list[_File]) -> dict[str, Any]:
    """One file parsed (YAML 1.2), its `environment_vars.include` env files added to `env` (the process
    environment wins), then `${VAR}` substituted in its values. `include:` entries are never substituted."""
    doc, lines = _parse_file(path)
    section = doc.get("environment_vars")
    names = section.get("include") if isinstance(section, dict) else None
    for name in names if isinstance(names, list) else ():
        file = (path.parent / str(name)).resolve()
        if not file.is_file():  # skipped: a variable it would have set is named where it is used
            continue
        for key, value in load_env_file(file).items():
            env.setdefault(key, value)
    substituted: dict[str, Any] = substitute_values(doc, env, file=path, lines=lines)  # a mapping stays one
    files.append(_File(path, substituted, lines))
    return substituted


def _expand_includes(
    doc: dict[str, Any], file: Path, env: dict[str, str], files: list[_File], seen: frozenset[Path]
) -> dict[str, Any]:
    includes = doc.pop("include", None) or []
    if not isinstance(includes, list):
        raise errors.ConfigError(f"{file}: include: must be a list of files or directories")
    merged = doc
    lines = next((f.lines for f in reversed(files) if f.path == file), {})
    for i, entry in enumerate(includes):
        target = (file.parent / str(entry)).resolve()
        if not target.exists():
            raise errors.ConfigError(f"{_where(file, lines, ('include', i))}: file not found: {target}")
        included = sorted(target.glob("*.yaml")) if target.is_dir() else [target]
        for sub in included:
            if sub in seen:
                raise errors.ConfigError(f"{_where(file, lines, ('include', i))}: circular dependency detected: {sub}")
            part = _expand_includes(_read_yaml(sub, env, files), sub, env, files, seen | {sub})
            merged = merge(merged, part)
    return merged


def reload(current: Config, env: Mapping[str, str] | None = None) -> Config:
    """Re-read `current`'s file; what the process set at start (runtime tokens, the embedded NATS and
    Postgres URLs) carries over. Raises ConfigError and changes nothing when the file is invalid."""
    if current.path is None:
        raise errors.ConfigError("this configuration was not loaded from a file")
    fresh = load(current.path, env=env)
    fresh = dataclasses.replace(
        fresh, nats_url=fresh.nats_url or current.nats_url, database_url=fresh.database_url or current.database_url
    )
    for token in current.runtime_tokens:
        fresh = fresh.with_runtime_token(token)
    return fresh


def fingerprint(config: Config) -> str:
    """A short hash of the loaded document (secrets included, so it is never logged as text), of the
    plugin catalog it was loaded with (a reload that only adds a plugin directory changes it) and of the
    vault file (a secret rolled through the API changes it)."""
    doc = {
        "config": config.raw,
        "catalog": catalog.signature(plugin_catalog(config)),
        "vault": config.vault.digest if config.vault is not None else None,
    }
    option = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    return hashlib.sha256(orjson.dumps(doc, option=option, default=str)).hexdigest()[:16]


def plugin_catalog(config: Config) -> catalog.Catalog:
    """The catalog `config` was loaded with (scanned now for a config built by hand)."""
    return config.catalog if config.catalog is not None else catalog.scan(config.plugin_roots, plugin_configs(config))


def plugin_configs(config: Config) -> dict[str, Mapping[str, Any] | None]:
    """Each configured plugin's `config` for the catalog's `config_keys.required` check (None: disabled)."""
    return {name: dict(p.config) if p.enabled else None for name, p in config.plugins.items()}


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, merge, substitute and validate the config at `path` (a file, or a directory holding config.yaml)."""
    path = Path(path).resolve()
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise errors.ConfigError(f"directory provided but config.yaml not found: {path}")
        path = path / "config.yaml"
    environ: dict[str, str] = dict(environment.process_env() if env is None else env)
    files: list[_File] = []
    first = _read_yaml(path, environ, files)
    doc = _expand_includes(first, path, environ, files, frozenset({path}))
    return from_dict(doc, path=path, env=environ, files=files)


def _located(
    path: tuple[str | int, ...], files: list[_File], fallback: Path | None, shown: tuple[str | int, ...] | None = None
) -> str:
    """`<file>:<line>: <key>` of the last file that wrote (the nearest part of) `path`; the key named is
    `shown` when given."""
    name = _dotted(path if shown is None else shown)
    for n in range(len(path), 0, -1):
        for file in reversed(files):
            line = file.lines.get(path[:n])
            if line is not None:
                return f"{file.path}:{line}: {name}"
    return f"{fallback}: {name}" if fallback else name


def _schema_problems(doc: dict[str, Any], files: list[_File], path: Path | None) -> list[str]:
    """Every schema violation as `<file>:<line>: <key>: <rule>` (never a value: it may be a secret)."""
    found = sorted(schemas.validator("config").iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{_located(_line_path(e), files, path, shown=tuple(e.absolute_path))}: {schemas.rule(e)}" for e in found]


def _line_path(error: Any) -> tuple[str | int, ...]:
    """Where to look up the line of a violation: an unknown key's own line, not its parent's."""
    at = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties") or {})
        extra = [k for k in error.instance if k not in known]
        if len(extra) == 1:
            return (*at, extra[0])
    return at


def from_dict(
    doc: dict[str, Any],
    *,
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    files: list[Any] | None = None,
) -> Config:
    """Validate a config document and build the frozen `Config`."""
    environ = dict(environment.process_env() if env is None else env)
    # messages name the path and the rule, never a value (values may be `${VAR}`-substituted secrets)
    problems = _schema_problems(doc, files or [], path)
    if problems:
        where = f"{path}: " if path and not files else ""
        raise errors.ConfigError(redact(where + "invalid config: " + "; ".join(problems), doc, environ))
    base_dir = path.parent if path else Path.cwd()
    settings = ductile_config.vault_settings(doc.get("secrets"))
    native, warnings = ductile_config.normalize(doc)
    vault: vault_mod.Vault | None = None
    try:
        if path is not None or settings:
            vault, found_warnings = vault_mod.open_configured(settings, base_dir, environ)
            warnings += found_warnings
        projected = vault.projected() if vault is not None else {}
        warnings += [
            f"secrets.{name}: also a secret in the vault; the vault's value is used (remove the entry)"
            for name in sorted(set(projected) & set(native.get("secrets") or {}))
        ]
        built = _build(native, path=path, base_dir=base_dir, env=environ, vault_secrets=projected)
        warnings += _vault_plugin_problems(built, vault)
        found = _with_aliases(catalog.scan(built.plugin_roots, plugin_configs(built)), native.get("plugins") or {})
        warnings += _root_problems(built.plugin_roots, found)
        routes = pipelines.compile_all(built.pipelines, found, agents=frozenset(built.agents))
        commands_of = {name: manifest.commands for name, manifest in found.plugins.items()}
        webhooks_mod.check_plugins(webhooks_mod.parse_all(built.webhooks), commands_of)
        schedules = schedules_mod.parse_all(native.get("plugins") or {})
        for schedule in schedules:
            if schedule.plugin not in commands_of and built.plugin(schedule.plugin).enabled:
                raise ValueError(f"{schedule.where}: unknown plugin {schedule.plugin!r} (not found under plugin_roots)")
        schedules_mod.check_commands(schedules, commands_of)
        for pipeline in routes.pipelines.values():
            if pipeline.trigger is None and pipeline.hook is None:
                warnings.append(
                    f"pipelines.{pipeline.name}: no `on:` or `on-hook:` trigger: it runs only "
                    f"when called (POST /pipeline/{pipeline.name} or a `call:` step)"
                )
        built = dataclasses.replace(built, routes=routes, catalog=found)
        for name, spec in agents_mod.parse_all(built.agents).items():
            warnings += [f"agents.{name}: {p}" for p in agents_mod.problems(spec, found, built)]
    except ValueError as exc:
        # `from None`: the cause's text would be printed unredacted (`headrace check-config` prints causes)
        extra = vault.values() if vault is not None else set()
        raise errors.ConfigError(redact(f"{path or 'config'}: {exc}", doc, environ, extra=extra)) from None
    return dataclasses.replace(built, raw=doc, warnings=tuple(warnings), vault=vault, schedules=schedules)


def _vault_plugin_problems(built: Config, vault: vault_mod.Vault | None) -> list[str]:
    """A warning per enabled plugin that declares `requires_vault` but whose jobs will fail: no vault,
    or its principal is not in the vault (Ductile fails such a spawn)."""
    out = []
    for name, plugin in built.plugins.items():
        if not plugin.enabled or not plugin.requires_vault:
            continue
        if vault is None:
            out.append(f"plugins.{name}.requires_vault: no vault is loaded (secrets.vault_file): its jobs will fail")
        elif not vault.has_principal(plugin.principal):
            out.append(
                f"plugins.{name}.requires_vault: principal {plugin.principal!r} is not in the vault: its "
                "jobs will fail until it is registered (POST /vault/principal)"
            )
    return out


def _with_aliases(found: catalog.Catalog, plugins: Mapping[str, Any]) -> catalog.Catalog:
    """`plugins.<alias>.uses: <base>`: the alias runs the base plugin's manifest and entrypoint under
    its own name (its own config, schedules, breaker and jobs), as Ductile's `ApplyAliases` does."""
    aliased = dict(found.plugins)
    for alias, spec in plugins.items():
        base = (spec or {}).get("uses")
        if base is None:
            continue
        manifest = found.get(str(base))
        if manifest is None:
            raise ValueError(f"plugins.{alias}.uses: unknown plugin {base!r} (not found under plugin_roots)")
        if alias in found.plugins:
            raise ValueError(f"plugins.{alias}.uses: {alias!r} is itself a plugin under plugin_roots")
        aliased[alias] = dataclasses.replace(manifest, name=alias, raw={**manifest.raw, "name": alias})
    return catalog.Catalog(plugins=aliased, errors=found.errors)


def _root_problems(roots: tuple[Path, ...], found: catalog.Catalog) -> list[str]:
    """A plugin root that does not exist is an error; one with no plugin in it, a warning."""
    out = []
    for root in roots:
        if not root.is_dir():
            raise ValueError(f"plugin_roots: {root} is not a directory")
        if not any(m.directory.parent == root for m in found.plugins.values()):
            out.append(f"plugin_roots: no plugin (*/manifest.yaml) under {root}")
    return out


REDACTED = "<redacted>"
#: shorter values are not searched for (tokens have at least 8 characters): they would garble messages
_MIN_REDACTED_LEN = 8


def secret_values(doc: Mapping[str, Any], env: Mapping[str, str]) -> set[str]:
    """The values of every secret-bearing field of a config document: API tokens, `secrets:`,
    plugins' `secrets`, agents' `llm.api_key`, and the environment variables webhooks' and relay peers'
    `secret_ref` name."""
    found: list[Any] = []

    def leaves(value: Any) -> None:
        if isinstance(value, Mapping):
            for item in value.values():
                leaves(item)
        elif isinstance(value, list):
            for item in value:
                leaves(item)
        else:
            found.append(value)

    api = doc.get("api")
    auth = api.get("auth") if isinstance(api, Mapping) else None
    tokens = auth.get("tokens") if isinstance(auth, Mapping) else None
    for token in tokens if isinstance(tokens, list) else ():
        if isinstance(token, Mapping):
            found.append(token.get("token"))
            ref = token.get("secret_ref")
            if isinstance(ref, str) and ref in env:
                found.append(env[ref])
    laddr = api.get("laddr") if isinstance(api, Mapping) else None
    if isinstance(laddr, Mapping):
        found.append(laddr.get("api_key"))
    found.append(env.get(LADDR_KEY_VAR))
    secrets = doc.get("secrets")
    if isinstance(secrets, Mapping):  # not Ductile's age_key_file/vault_file: file names, quoted in errors
        leaves({k: v for k, v in secrets.items() if k not in ductile_config.VAULT_KEYS})
    for section, key in (("plugins", "secrets"), ("agents", "llm")):
        entries = doc.get(section)
        for entry in entries.values() if isinstance(entries, Mapping) else ():
            inner = entry.get(key) if isinstance(entry, Mapping) else None
            if key == "llm":
                inner = inner.get("api_key") if isinstance(inner, Mapping) else None
            leaves(inner)
    hooks = doc.get("webhooks")
    if isinstance(hooks, Mapping):  # Ductile's map form
        hooks = hooks.get("endpoints")
    ingress = doc.get("remote_ingress")
    peers = ingress.get("peers") if isinstance(ingress, Mapping) else None
    for entry in [*(hooks if isinstance(hooks, list) else ()), *(peers if isinstance(peers, list) else ())]:
        ref = entry.get("secret_ref") if isinstance(entry, Mapping) else None
        if isinstance(ref, str) and ref in env:
            found.append(env[ref])
    return {str(v) for v in found if isinstance(v, str | int | float) and len(str(v)) >= _MIN_REDACTED_LEN}


def redact(message: str, doc: Mapping[str, Any], env: Mapping[str, str], *, extra: set[str] | None = None) -> str:
    """`message` with every secret value of `doc` (and `extra`: the vault's) replaced: the last line of
    defence behind messages that are written not to quote values in the first place."""
    values = secret_values(doc, env) | {v for v in extra or () if len(v) >= _MIN_REDACTED_LEN}
    for value in sorted(values, key=len, reverse=True):
        message = re.sub(rf"(?<![\w-])'?{re.escape(value)}'?(?![\w-])", REDACTED, message)
    return message


def _api_limits(raw: Mapping[str, Any]) -> ApiLimits:
    rate = raw.get("rate") or {}
    per_second = float(rate.get("per_second", 0))
    return ApiLimits(
        header_timeout_s=durations.parse_seconds(raw.get("header_timeout", "10s")),
        idle_timeout_s=durations.parse_seconds(raw.get("idle_timeout", "75s")),
        max_connections=int(raw.get("max_connections", 4096)),
        sse_per_token=int(raw.get("sse_per_token", 16)),
        rate_per_second=per_second,
        rate_burst=int(rate.get("burst") or max(1, round(per_second * 2))),
    )


def _build(
    doc: dict[str, Any],
    *,
    path: Path | None,
    base_dir: Path,
    env: Mapping[str, str],
    vault_secrets: Mapping[str, str] | None = None,
) -> Config:
    service = doc.get("service") or {}
    api = doc.get("api") or {}
    host, _, port = (api.get("listen") or "127.0.0.1:8080").rpartition(":")
    # `secret_ref` resolves from the vault first (Ductile's only source), then `secrets:`, then the environment
    secrets = {k: v for k, v in (doc.get("secrets") or {}).items() if isinstance(v, str)} | dict(vault_secrets or {})
    tokens = tuple(
        Token(
            token=_token_value(i, t, secrets, env),
            scopes=frozenset(t.get("scopes") or ()),
            name=t.get("name") or t.get("secret_ref"),
        )
        for i, t in enumerate((api.get("auth") or {}).get("tokens") or [])
    )
    laddr = _laddr_api(api.get("laddr") or {}, env)
    if laddr.api_key is not None and not any(
        t.token == laddr.api_key for t in tokens
    ):  # a listed token keeps its scopes
        tokens = (*tokens, Token(token=laddr.api_key, scopes=laddr.scopes, name="laddr"))
    max_workers = int(service.get("max_workers") or max(1, (os.cpu_count() or 2) - 1))
    plugins = {name: _plugin(name, spec or {}, max_workers) for name, spec in (doc.get("plugins") or {}).items()}
    roots = tuple((base_dir / r).resolve() for r in doc.get("plugin_roots") or []) or (DEFAULT_PLUGIN_ROOT,)
    nats = doc.get("nats") or {}
    database = doc.get("database") or {}
    offload = doc.get("offload") or {}
    agents_mod.parse_all(doc.get("agents") or {})  # shape problems the schema cannot express
    state_dir = env.get("HEADRACE_STATE_DIR") or service.get("state_dir") or ".state"
    schedules_mod.parse_all(doc.get("plugins") or {})  # cron strings, exactly one of every/cron/at/after
    hooks = webhooks_mod.parse_all(doc.get("webhooks") or ())
    listen = webhooks_mod.listen_address(doc.get("webhooks_listen")) if hooks else None
    remote_ingress = relay_mod.parse(doc.get("remote_ingress"), secrets, env)
    lease_ttl, lease_renew = _leader_lease(service.get("leader_lease") or {})
    return Config(
        path=path,
        service_name=service.get("name", "headrace"),
        log_level=service.get("log_level", "info"),
        dedupe_ttl_s=durations.parse_seconds(service.get("dedupe_ttl", "24h")),
        job_log_retention_s=durations.parse_seconds(service.get("job_log_retention", "30d")),
        max_workers=max_workers,
        work_lease_s=durations.parse_seconds(service.get("work_lease", "30s")),
        heartbeat_interval_s=durations.parse_seconds(service.get("heartbeat_interval", "5s")) or 5.0,
        leader_lease_ttl_s=lease_ttl,
        leader_lease_renew_s=lease_renew,
        plugin_user=service.get("plugin_user"),
        state_dir=(base_dir / state_dir).resolve(),
        plugin_roots=roots,
        api=ApiConfig(
            enabled=api.get("enabled", True),
            host=host or "127.0.0.1",
            port=int(port),
            max_concurrent_sync=int(api.get("max_concurrent_sync", 10)),
            max_body_bytes=int(api.get("max_body_bytes", 1024 * 1024)),
            limits=_api_limits(api.get("limits") or {}),
            tokens=tokens,
            allowed_origins=tuple(str(o).strip() for o in api.get("allowed_origins") or () if str(o).strip()),
            laddr=laddr,
        ),
        plugins=plugins,
        pipelines=tuple(doc.get("pipelines") or ()),
        webhooks=tuple(doc.get("webhooks") or ()),
        webhooks_listen=listen,
        remote_ingress=remote_ingress,
        webhook_secrets=webhooks_mod.resolve_secrets(hooks, secrets, env),
        agents=dict(doc.get("agents") or {}),
        offload_threshold_bytes=int(offload.get("threshold_bytes", 100 * 1024)),
        offload_bucket=offload.get("bucket", "laddr"),
        nats_url=env.get("NATS_URL") or nats.get("url") or None,
        nats_replicas=int(nats.get("replicas", 1)),
        nats_sync_interval=str(nats.get("sync_interval", "always")),
        database_url=env.get("DATABASE_URL") or database.get("url") or None,
        raw=doc,
    )


#: the shortest lease: below it a renewal's round trip under load is a fair share of the lease
MIN_LEASE_TTL_S = 1.0


def _leader_lease(raw: Mapping[str, Any]) -> tuple[float, float]:
    """`service.leader_lease` as (ttl, renew) seconds: the holder must get at least three renewals into
    one lease, so one or two that fail (a NATS hiccup) do not depose it."""
    ttl = durations.parse_seconds(raw.get("ttl", "5s"))
    renew = durations.parse_seconds(raw.get("renew", "1s"))
    if ttl < MIN_LEASE_TTL_S:
        raise ValueError(f"service.leader_lease.ttl: {ttl:g}s is shorter than the minimum {MIN_LEASE_TTL_S:g}s")
    if renew <= 0 or renew * 3 > ttl:
        raise ValueError(
            f"service.leader_lease.renew: {renew:g}s must be positive and at most a third of the ttl ({ttl:g}s)"
        )
    return ttl, renew


def _laddr_api(raw: Mapping[str, Any], env: Mapping[str, str]) -> LaddrApi:
    """`api.laddr`, its key from the file or else from $LADDR_API_KEY (Laddr's own source)."""
    key = raw.get("api_key")
    where = "api.laddr.api_key"
    if key is None and env.get(LADDR_KEY_VAR):
        key, where = env[LADDR_KEY_VAR], f"environment variable {LADDR_KEY_VAR}"
    if key is not None and len(str(key)) < 8:
        raise ValueError(f"{where}: a Laddr key must have at least 8 characters")
    chosen = raw.get("scopes")
    scopes = frozenset(chosen) if chosen is not None else scopes_mod.laddr_default_scopes()
    is_open = raw.get("auth", "key") == "none"
    if is_open and key is not None:
        raise ValueError(f"api.laddr.auth: 'none' (no key) contradicts the key set in {where}: remove one")
    return LaddrApi(
        api_key=str(key) if key is not None else None,
        scopes=scopes,
        open=is_open,
        dashboard=str(raw.get("dashboard") or LADDR_DASHBOARD),
        jobs_list=str(raw.get("jobs_list") or "array"),
    )


def _token_value(i: int, token: Mapping[str, Any], secrets: Mapping[str, str], env: Mapping[str, str]) -> str:
    """A token's value: literal `token`, or Ductile's `secret_ref` resolved from the vault, then
    `secrets:`, then the environment (`secrets` holds the first two, the vault's winning)."""
    if "token" in token:
        return str(token["token"])
    ref = str(token["secret_ref"])
    value = secrets.get(ref, env.get(ref))
    if not value:
        raise ValueError(
            f"api.auth.tokens[{i}]: secret_ref {ref!r} resolves to nothing: neither an active secret "
            "of the vault (secrets.vault_file), a secrets: entry nor an environment variable of that "
            "name is set"
        )
    if len(value) < 8:
        raise ValueError(f"api.auth.tokens[{i}]: the secret {ref!r} names is shorter than 8 characters")
    return value


def _plugin(name: str, spec: Mapping[str, Any], max_workers: int) -> PluginConfig:
    retry = spec.get("retry") or {}
    breaker = spec.get("circuit_breaker") or {}
    parallelism = spec.get("parallelism")
    if parallelism is not None and parallelism > max_workers:
        raise ValueError(f"plugins.{name}.parallelism: {parallelism} exceeds service.max_workers {max_workers}")
    return PluginConfig(
        name=name,
        enabled=spec.get("enabled", True),
        parallelism=parallelism,
        notify_on_complete=spec.get("notify_on_complete", False),
        config=dict(spec.get("config") or {}),
        secrets=dict(spec.get("secrets") or {}),
        retry=RetryPolicy(
            max_attempts=int(retry.get("max_attempts", 4)),
            backoff_base_s=durations.parse_seconds(retry.get("backoff_base", "30s")),
        ),
        timeouts_s={k: durations.parse_seconds(v) for k, v in (spec.get("timeouts") or {}).items()},
        schedules=tuple(spec.get("schedules") or ()),
        circuit_breaker=CircuitBreaker(
            threshold=int(breaker.get("threshold", 3)),
            reset_after_s=durations.parse_seconds(breaker.get("reset_after", "30m")),
        ),
        vault_principal=str(spec["vault_principal"]) if spec.get("vault_principal") else None,
        requires_vault=bool(spec.get("requires_vault", False)),
    )


PLUGIN_ENV_ALLOWLIST = environment.PLUGIN_ENV_ALLOWLIST


def plugin_base_env() -> dict[str, str]:
    """The minimal environment a plugin subprocess gets: never the gateway's own secrets."""
    return environment.minimal(environment.process_env())


def instance_name(role: str) -> str:
    """`<role>/<host>-<pid>`: the `source` of the envelopes a process publishes."""
    return f"{role}/{os.uname().nodename}-{os.getpid()}"
