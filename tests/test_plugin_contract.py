"""The QGIS plugin's own copy of the HTTP contract (qgis_plugin/api/contract.py: it may not import the
backend) agrees with backend/contract.py: every path it calls, every state name it reads."""
from __future__ import annotations

from backend import contract as backend
from qgis_plugin.api import contract as plugin


def test_plugin_paths_and_state_names_agree_with_the_backend():
    assert plugin.PATHS, "the plugin's paths"
    for name, path in plugin.PATHS.items():
        assert getattr(backend, name) == path, name
    assert {s.value for s in plugin.JobState} == {s.value for s in backend.JobState}
    assert {s.value for s in plugin.TERMINAL_STATES} == {s.value for s in backend.TERMINAL_STATES}
    assert {s.value for s in plugin.GroupStatus} == {s.value for s in backend.GroupStatus}
