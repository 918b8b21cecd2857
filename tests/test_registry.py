"""Processor discovery: built-ins, test processors on request, third parties by entry point."""
from __future__ import annotations

import textwrap

import pytest

from processors.errors import ProcessorNotFound
from processors.registry import ProcessorRegistry


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """An installed distribution (dist-info on sys.path) registering one good and one broken entry point."""
    package = tmp_path / "thirdparty_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent('''
        from processors import DataLicense, Processor, ProcessorMetadata

        class Floods(Processor):
            name = "thirdparty_floods"
            version = "version_3"
            metadata = ProcessorMetadata(description="floods", dataset="floods", author="someone",
                license=DataLicense(name="CC0", path="https://creativecommons.org/publicdomain/zero/1.0/", title="CC0"),
                origin_url="https://example.org", formats=("GeoTIFF",))
    '''))
    dist = tmp_path / "thirdparty-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[ccg_autopkg.processors]\nfloods = thirdparty_pkg:Floods\nbroken = thirdparty_pkg:DoesNotExist\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "thirdparty_floods.version_3"


def test_test_processors_are_listed_only_when_asked():
    assert "test_processor.version_1" not in ProcessorRegistry.discover().names()
    names = ProcessorRegistry.discover(include_test_processors=True).names()
    assert {"test_processor.version_1", "test_fail_processor.version_1", "natural_earth_admin1.version_1"} <= set(names)


def test_entry_point_processors_are_registered_and_broken_ones_skipped(third_party, caplog):
    registry = ProcessorRegistry.discover()
    assert registry.get(third_party).metadata.dataset == "floods"
    assert "cannot load processor entry point broken" in caplog.text


def test_unknown_processor_names_the_name():
    with pytest.raises(ProcessorNotFound, match="unknown processor: nope.version_1"):
        ProcessorRegistry.discover().get("nope.version_1")


def test_processor_names_must_be_path_safe():
    from processors.builtin.test_processors import TestProcessor

    class Unsafe(TestProcessor):
        name = "../etc"

    with pytest.raises(ValueError, match="name and version must match"):
        ProcessorRegistry([Unsafe])
