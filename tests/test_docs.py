"""The README tells the truth: every environment variable, `lockgate:` key and route is documented."""

from __future__ import annotations

import re
from pathlib import Path

from lockgate import config
from lockgate.app import Gateway
from lockgate.config import parse_settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def table_rows(heading: str) -> list[str]:
    section = README.split(heading, 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        match = re.match(r"\| `([^`]+)` \|", line)
        if match:
            rows.append(match.group(1))
    return rows


def test_environment_variables_table_matches_the_code() -> None:
    assert table_rows("### Environment variables") == list(config.ENVIRONMENT)


def test_lockgate_section_table_matches_the_code() -> None:
    assert sorted(table_rows("`lockgate:` section:")) == sorted(config._LOCKGATE)


def test_every_route_is_documented() -> None:
    gateway = Gateway(parse_settings({"model_list": []}, {}))
    for path in gateway.routes:
        assert f"`{path}`" in README or f"`GET {path}`" in README or f"`POST {path}`" in README, path
