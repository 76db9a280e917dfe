"""`api.limits`: defaults, parsing, and the schema refusing unknown or out-of-range keys."""

from __future__ import annotations

import pytest

from services.core import config, errors


def test_defaults_leave_rate_limiting_off() -> None:
    limits = config.from_dict({}).api.limits
    assert limits.header_timeout_s == 10 and limits.idle_timeout_s == 75
    assert limits.max_connections == 4096 and limits.sse_per_token == 16 and limits.rate_per_second == 0


def test_limits_are_parsed() -> None:
    doc = {
        "api": {
            "limits": {
                "header_timeout": "2s",
                "idle_timeout": 30,
                "max_connections": 100,
                "sse_per_token": 3,
                "rate": {"per_second": 5},
            }
        }
    }
    limits = config.from_dict(doc).api.limits
    assert (limits.header_timeout_s, limits.idle_timeout_s, limits.max_connections, limits.sse_per_token) == (
        2,
        30,
        100,
        3,
    )
    assert limits.rate_per_second == 5 and limits.rate_burst == 10  # burst defaults to 2 s worth
    assert config.from_dict({"api": {"limits": {"rate": {"per_second": 5, "burst": 1}}}}).api.limits.rate_burst == 1


@pytest.mark.parametrize(
    "limits", [{"max_conections": 5}, {"max_connections": 0}, {"rate": {"burst": 0}}, {"header_timeout": "soon"}]
)
def test_bad_limits_are_refused(limits: dict) -> None:
    with pytest.raises(errors.ConfigError, match="limits"):
        config.from_dict({"api": {"limits": limits}})
