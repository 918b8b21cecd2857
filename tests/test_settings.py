"""Settings come from CCGAUTOPKG_* variables, with derived folders and clear errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from backend.settings import Settings


def test_defaults_put_all_state_under_the_data_dir(tmp_path):
    s = Settings.from_env({"CCGAUTOPKG_DATA_DIR": str(tmp_path)})
    assert s.localfs_storage_backend_root == tmp_path / "packages"
    assert s.localfs_processing_backend_root == tmp_path / "processing"
    assert s.boundaries_db == tmp_path / "boundaries.db" and s.huey_db == tmp_path / "huey.db"
    assert s.host == "127.0.0.1"


def test_default_data_dir_is_per_user(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert Settings.from_env({}).data_dir == tmp_path / "ccg-autopkg"


def test_specific_settings_override_the_data_dir(tmp_path):
    s = Settings.from_env({"CCGAUTOPKG_DATA_DIR": str(tmp_path), "CCGAUTOPKG_LOCALFS_STORAGE_BACKEND_ROOT": "/srv/packages"})
    assert s.localfs_storage_backend_root == Path("/srv/packages")


def test_values_are_typed():
    s = Settings.from_env({"CCGAUTOPKG_PORT": "9001", "CCGAUTOPKG_INCLUDE_TEST_PROCESSORS": "yes", "CCGAUTOPKG_HEARTBEAT_TIMEOUT": "2.5"})
    assert (s.port, s.include_test_processors, s.heartbeat_timeout) == (9001, True, 2.5)


@pytest.mark.parametrize("variable, value", [("CCGAUTOPKG_PORT", "eighty"), ("CCGAUTOPKG_SEED_BOUNDARIES", "maybe"), ("CCGAUTOPKG_HEARTBEAT_TIMEOUT", "soon")])
def test_bad_values_name_the_variable(variable, value):
    with pytest.raises(ValueError, match=f"{variable}={value!r} is not a valid"):
        Settings.from_env({variable: value})


def test_only_localfs_storage_is_accepted():
    with pytest.raises(ValueError, match="only 'localfs' is supported"):
        Settings.from_env({"CCGAUTOPKG_STORAGE_BACKEND": "s3"})


def test_command_line_overrides_win_over_environment():
    assert Settings.from_env({"CCGAUTOPKG_PORT": "9001"}, port=9002, host=None).port == 9002
