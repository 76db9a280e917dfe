"""`agents.<name>.max_parallel_tools`: parsed with its default, checked by the config schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core import agents, config, errors


def load(tmp_path: Path, extra: str) -> config.Config:
    path = tmp_path / "config.yaml"
    path.write_text("agents:\n  a:\n    llm: {provider: echo}\n" + extra)
    return config.load(path, env={})


def test_max_parallel_tools_defaults_to_4_and_is_read(tmp_path: Path) -> None:
    assert agents.specs(load(tmp_path, ""))["a"].max_parallel_tools == agents.DEFAULT_MAX_PARALLEL_TOOLS == 4
    assert agents.specs(load(tmp_path, "    max_parallel_tools: 1\n"))["a"].max_parallel_tools == 1


@pytest.mark.parametrize("value", ["0", "65", "two"])
def test_max_parallel_tools_out_of_range_is_a_config_error_naming_it(tmp_path: Path, value: str) -> None:
    with pytest.raises(errors.ConfigError, match=r"agents\.a\.max_parallel_tools"):
        load(tmp_path, f"    max_parallel_tools: {value}\n")
