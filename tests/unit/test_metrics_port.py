"""The metrics port of a service run alone: its flags (offered by the services without an HTTP server of
their own, off by default) and who may scrape it (the route table's scopes for GET /metrics)."""

from __future__ import annotations

import pytest

from services import cli
from services.core import config as config_mod
from services.core import errors, metrics_server, scopes

TOKENS = (
    config_mod.Token(token="scraper-token", scopes=frozenset({"system:ro"}), name="prom"),
    config_mod.Token(token="admin-token-0", scopes=frozenset({"*"}), name="admin"),
    config_mod.Token(token="jobs-token-00", scopes=frozenset({"jobs:rw", "plugin:rw"}), name="jobs"),
)


def test_the_flags_are_the_alone_services_and_off_by_default() -> None:
    args = cli._parser().parse_args(["runner", "--metrics-port", "9464", "--metrics-host", "0.0.0.0"])
    assert (args.metrics_port, args.metrics_host) == (9464, "0.0.0.0")
    for command in ("dispatcher", "projector"):
        args = cli._parser().parse_args([command])
        assert (args.metrics_port, args.metrics_host) == (0, "127.0.0.1")
    with pytest.raises(SystemExit):  # the API serves GET /metrics on its own port
        cli._parser().parse_args(["api", "--metrics-port", "9464"])


def test_who_may_scrape_is_what_the_route_table_says() -> None:
    rule = scopes.route_rule("GET", metrics_server.PATH)
    assert rule is not None and rule.any_of == ("system:ro", "system:rw")
    assert metrics_server.refusal("Bearer scraper-token", TOKENS) is None
    assert metrics_server.refusal("bearer  admin-token-0 ", TOKENS) is None
    for header in ("", "Basic scraper-token", "Bearer ", "Bearer scraper-token-not"):
        assert isinstance(metrics_server.refusal(header, TOKENS), errors.Unauthorized), header
    refused = metrics_server.refusal("Bearer jobs-token-00", TOKENS)
    assert isinstance(refused, errors.Forbidden) and refused.details["required_scopes"] == ["system:ro", "system:rw"]


def test_only_an_admin_token_reads_the_healthz_error_texts() -> None:
    assert metrics_server.is_admin("Bearer admin-token-0", TOKENS)
    for header in ("", "Bearer scraper-token", "Bearer jobs-token-00", "Basic admin-token-0", "Bearer admin-token-"):
        assert not metrics_server.is_admin(header, TOKENS), header
