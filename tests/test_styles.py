"""processors/styles.py: one JSON style spec per known dataset (the QGIS plugin draws them; see
tests/plugin/test_styles.py)."""
from __future__ import annotations

import json

from processors.registry import ProcessorRegistry
from processors.styles import STYLES, style_for


def test_every_spec_is_json_and_names_a_known_dataset():
    assert set(STYLES) <= set(ProcessorRegistry.discover().datasets()), "a style for a dataset nobody makes"
    for name in STYLES:
        spec = style_for(name)
        assert json.loads(json.dumps(spec)) == spec and set(spec) <= {"raster", "vector"} and spec
    assert style_for("no_such_dataset") is None
