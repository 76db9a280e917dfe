"""`headrace <command>`: parse flags, configure logging, run a service. No business logic here.

headrace up          all four services + embedded NATS (+ Postgres when none is given)
headrace api|dispatcher|runner|projector   one service against NATS_URL and DATABASE_URL
headrace rebuild     re-project the event log into fresh read models and swap them in
headrace check-config  validate a config file and exit
headrace jobs|tail|doctor|plugin   the operator's verbs, over the API's HTTP (services/cli_client/)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.cli_client import connection as client_connection
from services.cli_client import verbs as client_verbs
from services.core import config as config_mod
from services.core import embedded, environment, errors, lifecycle, logging, resources
from services.core.version import version

if TYPE_CHECKING:
    from services.api.service import Api
    from services.core import health, metrics_server
    from services.dispatcher.service import Dispatcher
    from services.projector.service import Projector
    from services.runner.service import Runner

DEFAULT_CONFIG = "config.yaml"
EXAMPLE_CONFIG = "config.example.yaml"


def _parser() -> argparse.ArgumentParser:
    env = environment.process_env()
    parser = argparse.ArgumentParser(prog="headrace", description="Event-sourced job and agent gateway.")
    parser.add_argument(
        "-c",
        "--config",
        default=env.get("HEADRACE_CONFIG"),
        help="config file (env HEADRACE_CONFIG; default ./config.yaml, else ./config.example.yaml, else the bundled example)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"headrace {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    # -c/--config is accepted after the subcommand too (`headrace up --config x.yaml`)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", dest="config_after", default=None, help=argparse.SUPPRESS)
    up = sub.add_parser(
        "up", parents=[common], help="run everything in one process tree, with embedded NATS (and Postgres)"
    )
    up.add_argument(
        "--state-dir",
        default=env.get("HEADRACE_STATE_DIR", ".state"),
        help="where NATS data, ports and the admin token live (env HEADRACE_STATE_DIR)",
    )
    up.add_argument("--port", type=int, default=None, help="API port (default: api.listen)")
    # the services without an HTTP server of their own may serve GET /metrics and /healthz on a port (README "Metrics")
    scraped = argparse.ArgumentParser(add_help=False)
    scraped.add_argument(
        "--metrics-port",
        type=int,
        default=env.get("HEADRACE_METRICS_PORT") or "0",  # a string default goes through `type` too
        help="serve GET /metrics and GET /healthz on this port (env HEADRACE_METRICS_PORT; default 0: off)",
    )
    scraped.add_argument(
        "--metrics-host",
        default=env.get("HEADRACE_METRICS_HOST") or "127.0.0.1",
        help="address of the metrics port (env HEADRACE_METRICS_HOST; default 127.0.0.1)",
    )
    sub.add_parser("api", parents=[common], help="run the api alone (needs NATS_URL and DATABASE_URL)")
    for name in ("dispatcher", "projector"):
        sub.add_parser(name, parents=[common, scraped], help=f"run the {name} alone (needs NATS_URL and DATABASE_URL)")
    runner = sub.add_parser("runner", parents=[common, scraped], help="run a runner alone (needs NATS_URL)")
    runner.add_argument("--plugin", action="append", dest="plugins", help="serve only these plugins (repeatable)")
    sub.add_parser("rebuild", parents=[common], help="re-project the whole event log into fresh read models")
    sub.add_parser("check-config", parents=[common], help="validate the config file and exit")
    init = sub.add_parser(
        "vault-init", help="create a Ductile age vault (Ductile's `vault init`); print its admin token once"
    )
    init.add_argument("--vault", required=True, help="the vault file to create (secrets.vault_file)")
    init.add_argument("--key", required=True, help="the age key file (secrets.age_key_file)")
    init.add_argument("--keygen", action="store_true", help="create the key file too (0600) when it does not exist")
    client_verbs.add_parsers(sub)
    return parser


def _config_path(arg: str | None) -> Path:
    """-c, else ./config.yaml, else ./config.example.yaml (a checkout), else the example the package carries."""
    if arg:
        return Path(arg)
    for candidate in (DEFAULT_CONFIG, EXAMPLE_CONFIG):
        if Path(candidate).exists():
            return Path(candidate)
    return resources.bundled(EXAMPLE_CONFIG)


def _stop_on_signals() -> asyncio.Event:
    """An event SIGINT/SIGTERM set from now on: installed before anything starts, so a signal that arrives
    while the services start stops them once they are up instead of killing the process half-started."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _until_signalled(services: list[lifecycle.Service], stop: asyncio.Event) -> None:
    watchers = [asyncio.create_task(s.wait()) for s in services] + [asyncio.create_task(stop.wait())]
    await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
    for task in watchers:
        task.cancel()
    for service in reversed(services):
        await service.stop()
    failed = [s for s in services if s.failure is not None]
    if failed:
        raise errors.HeadraceError(f"{failed[0].name} stopped: {failed[0].failure!r}")


async def _up(args: argparse.Namespace) -> None:
    stop = _stop_on_signals()
    from services.api import service as api_service
    from services.api.service import Api
    from services.dispatcher.service import Dispatcher
    from services.projector.service import Projector
    from services.runner.service import Runner

    state_dir = Path(args.state_dir).resolve()
    token, created = embedded.admin_token(state_dir)
    # the captured process environment (never the plugins'), so POST /system/reload re-reads the file the same way
    environment.set_var("HEADRACE_ADMIN_TOKEN", token)
    environment.set_var("HEADRACE_STATE_DIR", str(state_dir))
    config = config_mod.load(_config_path(args.config))
    logging.configure(config.log_level)
    _log_warnings(config)
    config = config.with_runtime_token(config_mod.Token(token=token, scopes=frozenset({"*"}), name="admin (state dir)"))
    # a taken port is said before NATS and Postgres start, not after every other service is up
    api_service.ensure_port_free(config.api.host, args.port if args.port is not None else config.api.port)
    nats = None
    if not config.nats_url:
        nats = embedded.EmbeddedNats(state_dir, sync_interval=config.nats_sync_interval)
        config = dataclasses.replace(config, nats_url=await nats.start())
    database_url, pg = await embedded.resolve_postgres(config.database_url, state_dir)
    config = dataclasses.replace(config, database_url=database_url)
    services: list[lifecycle.Service] = [
        Projector(config),
        Dispatcher(config),
        Runner(config),
        Api(config, port=args.port),
    ]
    try:
        for service in services:
            await service.start()
        api = services[-1]
        assert isinstance(api, Api)
        client_connection.write_url(state_dir, api.url)  # where `headrace jobs|tail|doctor` find it
        print(f"Headrace is up: {api.url} (database {embedded.display_url(database_url)})", flush=True)
        if created:
            print(f"Admin token (shown once, kept in {state_dir / 'admin.token'}): {token}", flush=True)
        else:
            print(f"Admin token: in {state_dir / 'admin.token'}", flush=True)
        print(f'  curl -H "Authorization: Bearer $(cat {state_dir / "admin.token"})" {api.url}/healthz', flush=True)
        await _until_signalled(services, stop)
    finally:
        for service in reversed(services):
            await service.stop()
        if nats is not None:
            await nats.stop()
        if pg is not None:
            await pg.stop()


def _log_warnings(config: config_mod.Config) -> None:
    log = logging.get("config")
    for line in config.warnings:
        log.warning("config_key_without_effect", detail=line)


def _load(args: argparse.Namespace) -> config_mod.Config:
    config = config_mod.load(_config_path(args.config))
    logging.configure(config.log_level)
    _log_warnings(config)
    return config


async def _single(args: argparse.Namespace) -> None:
    stop = _stop_on_signals()
    config = _load(args)
    if not config.nats_url:
        raise errors.ConfigError(
            "NATS_URL (or nats.url) is required to run one service alone; `headrace up` embeds one"
        )
    needs_db = args.command in ("api", "projector")
    if needs_db and not config.database_url:
        raise errors.ConfigError("DATABASE_URL (or database.url) is required for the api and the projector")
    from services.core import health

    service: Api | Dispatcher | Projector | Runner
    probe: health.Probe | None = None
    if args.command == "api":
        from services.api.service import Api

        service = Api(config)
    elif args.command == "dispatcher":
        from services.dispatcher.service import Dispatcher

        dispatcher = service = Dispatcher(config)
        probe = health.Probe(dispatcher, bus=lambda: dispatcher.bus, leadership=lambda: dispatcher.leadership)
    elif args.command == "projector":
        from services.projector.service import Projector

        projector = service = Projector(config)
        probe = health.Probe(
            projector, bus=lambda: projector.bus, pool=lambda: projector.pool, leadership=lambda: projector.leadership
        )
    else:
        from services.runner.service import Runner

        runner = service = Runner(config, plugins=args.plugins)
        probe = health.Probe(runner, bus=lambda: runner.bus)
    await service.start()
    print(f"headrace {args.command} started", flush=True)
    scrape = await _metrics_port(args, service, lambda: service.config.api.tokens, probe)
    try:
        await _until_signalled([service], stop)
    finally:
        if scrape is not None:
            await scrape.stop()


async def _metrics_port(
    args: argparse.Namespace,
    service: lifecycle.Service,
    tokens: metrics_server.Tokens,
    probe: health.Probe | None,
) -> metrics_server.MetricsServer | None:
    """The service's GET /metrics and GET /healthz on --metrics-port (None when 0), taking the tokens its
    config has now."""
    port = getattr(args, "metrics_port", 0)
    if not port:
        return None
    from services.core import metrics_server

    scrape = metrics_server.MetricsServer(tokens, host=args.metrics_host, port=port, probe=probe)
    try:
        await scrape.start()
    except OSError as exc:
        await service.stop()
        raise errors.ConfigError(f"cannot serve metrics on {args.metrics_host}:{port}: {exc}") from exc
    print(f"metrics on {scrape.url}", flush=True)
    return scrape


async def _rebuild(args: argparse.Namespace) -> None:
    from services.core import bus as bus_mod
    from services.core import db
    from services.projector import rebuild

    config = _load(args)
    if not config.nats_url or not config.database_url:
        raise errors.ConfigError("rebuild needs NATS_URL and DATABASE_URL")
    bus = await bus_mod.Bus.connect(config.nats_url, name=config_mod.instance_name("rebuild"))
    try:
        pool = await db.connect_and_migrate(config.database_url, max_size=1)
        await pool.close()
        stats = await rebuild.rebuild(bus, config.database_url)
    finally:
        await bus.close()
    print(
        f"rebuilt read models from {stats['events']} events (checkpoint {stats['checkpoint']}) in {stats['seconds']}s",
        flush=True,
    )


async def _check(args: argparse.Namespace) -> None:
    config = config_mod.load(
        _config_path(args.config), env={**environment.process_env(), "HEADRACE_ADMIN_TOKEN": "x" * 16}
    )
    for line in config.warnings:
        print(f"headrace: warning: {line}", file=sys.stderr)
    print(f"{config.path}: ok ({len(config.plugins)} plugins configured)")


async def _vault_init(args: argparse.Namespace) -> None:
    from services.core import vault

    key = Path(args.key)
    try:
        if args.keygen and not key.exists():
            vault.keygen(key)
        token = vault.init(Path(args.vault), key)
    except (vault.VaultFileError, OSError) as exc:
        raise errors.ConfigError(str(exc)) from None
    print(f"{args.vault}: vault created; its admin token (shown once, for the /vault/* routes):", file=sys.stderr)
    print(token, flush=True)


COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int | None]]] = {
    "up": _up,
    "api": _single,
    "dispatcher": _single,
    "runner": _single,
    "projector": _single,
    "rebuild": _rebuild,
    "check-config": _check,
    "vault-init": _vault_init,
    **dict.fromkeys(client_verbs.NAMES, client_verbs.run),
}


def _run(coro: Coroutine[Any, Any, int | None]) -> int | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.run(coro)
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if argv is None and args.command not in client_verbs.NAMES:
        # a real process: keep the gateway's environment from in-process plugins and children (it re-executes
        # this process); the operator's verbs run no plugin and keep theirs. Parsed again once sealed: the
        # flags' environment defaults (HEADRACE_CONFIG, HEADRACE_METRICS_PORT, ...) are in the captured copy,
        # no longer in os.environ
        environment.seal()
        args = _parser().parse_args(argv)
    args.config = getattr(args, "config_after", None) or args.config
    try:
        code = _run(COMMANDS[args.command](args))
    except KeyboardInterrupt:
        return 130
    except errors.HeadraceError as exc:
        if args.verbose:
            raise
        chain, cause = [str(exc)], exc.__cause__
        while cause is not None:
            chain.append(str(cause) or type(cause).__name__)
            cause = cause.__cause__
        print("headrace: error: " + ": ".join(dict.fromkeys(chain)), file=sys.stderr)
        return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
