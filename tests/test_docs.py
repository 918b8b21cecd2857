"""The README documents every setting and every route (the docs cannot silently drift)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from backend.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize("variable", [row[0] for row in Settings.documentation()])
def test_readme_lists_every_setting(variable):
    assert f"`{variable}`" in README


def app_routes() -> list[tuple[str, str]]:
    """(method, path) of every documented route, from the app's own OpenAPI schema."""
    from backend.api import create_app

    class NoService:  # create_app only reads attributes when routes run
        settings = boundaries = packages = registry = queue = None

    paths = create_app(NoService()).openapi()["paths"]
    return [(method.upper(), path) for path, operations in paths.items() for method in sorted(operations)]


@pytest.mark.parametrize("method, path", app_routes())
def test_readme_lists_every_route(method, path):
    assert re.search(rf"`{method} {re.escape(path)}[`?]", README), f"{method} {path} missing from README"


def test_readme_shows_the_two_commands():
    assert "make run" in README and "make test" in README


def readme_cli_lines() -> list[str]:
    return [m.group(1) for m in re.finditer(r"^\$ \.venv/bin/autopkg (.+?)(?:\s+#.*)?$", README, re.M)]


@pytest.mark.parametrize("line", readme_cli_lines())
def test_readme_cli_examples_are_valid_commands(line):
    """(They were run by hand against `make run`; this keeps them valid as the CLI changes.)"""
    import shlex

    from backend.cli import build_parser

    args = build_parser().parse_args(shlex.split(line))
    assert callable(args.func)


def test_readme_has_cli_examples():
    assert len(readme_cli_lines()) >= 8
