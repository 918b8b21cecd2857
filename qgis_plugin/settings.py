"""Every setting of the plugin, in one place (QGIS settings under `ccg_autopkg/`).

`PluginSettings` owns the keys: nothing else in the plugin reads or writes `QgsSettings` for
them. The options page (Settings → Options → CCG AutoPackaging) edits the backend URL, the
download cache and local package use; the dock remembers the chosen boundary and ticked datasets.
The API token itself is never here: only the id of its entry in QGIS's authentication database.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from qgis.core import QgsApplication, QgsSettings

from .__about__ import SETTINGS_PREFIX

DEFAULT_URL = "http://127.0.0.1:8000"
CONFIRM_BYTES = 2_000_000_000  # submitting more than this (estimated) asks first
CONFIRM_LAYERS = 100  # … or more layers than this


@dataclass(frozen=True)
class Key:
    name: str
    default: Any
    type: type

    @property
    def path(self) -> str:
        return f"{SETTINGS_PREFIX}/{self.name}"


BACKEND_URL = Key("backend_url", DEFAULT_URL, str)
AUTHCFG = Key("authcfg", "", str)  # id of the token's entry in the QGIS authentication database
CACHE_DIR = Key("cache_dir", "", str)  # download cache ('' = under the QGIS profile)
USE_LOCAL_PACKAGES = Key("use_local_packages", True, bool)  # the backend's own files on this machine, in place
LOCAL_PACKAGE_ROOT = Key("local_package_root", "", str)  # that package root, when not the backend's default
AUTOPKG_COMMAND = Key("autopkg_command", "", str)  # "Start local backend": the command line (or a JSON list)
AUTO_LOAD = Key("auto_load", True, bool)  # load the package when its job completes
LAST_BOUNDARY = Key("last_boundary", "", str)  # JSON {name, name_long}
CHECKED_DATASETS = Key("checked_datasets", "", str)  # JSON list of processor names
KEYS = (BACKEND_URL, AUTHCFG, CACHE_DIR, USE_LOCAL_PACKAGES, LOCAL_PACKAGE_ROOT, AUTOPKG_COMMAND, AUTO_LOAD,
        LAST_BOUNDARY, CHECKED_DATASETS)


class PluginSettings:
    """Typed access to the plugin's settings; a fresh `QgsSettings` per call (any thread)."""

    def get(self, key: Key) -> Any:
        return QgsSettings().value(key.path, key.default, type=key.type)

    def set(self, key: Key, value: Any) -> None:
        QgsSettings().setValue(key.path, value)

    def remove(self, key: Key) -> None:
        QgsSettings().remove(key.path)

    # -- the backend ------------------------------------------------------------------------------
    @property
    def backend_url(self) -> str:
        return (self.get(BACKEND_URL) or DEFAULT_URL).strip().rstrip("/")

    @backend_url.setter
    def backend_url(self, value: str) -> None:
        self.set(BACKEND_URL, (value or DEFAULT_URL).strip().rstrip("/"))

    @property
    def authcfg(self) -> str:
        return self.get(AUTHCFG) or ""

    @authcfg.setter
    def authcfg(self, value: str) -> None:
        self.set(AUTHCFG, value) if value else self.remove(AUTHCFG)

    @property
    def autopkg_command(self) -> str:
        return (self.get(AUTOPKG_COMMAND) or "").strip()

    # -- files ------------------------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        """The download cache, by default under the QGIS profile."""
        configured = self.get(CACHE_DIR)
        return Path(configured) if configured else Path(QgsApplication.qgisSettingsDirPath()) / "ccg_autopkg_cache"

    @property
    def use_local_packages(self) -> bool:
        return bool(self.get(USE_LOCAL_PACKAGES))

    @property
    def local_package_root(self) -> str:
        return self.get(LOCAL_PACKAGE_ROOT) or ""

    # -- the dock -----------------------------------------------------------------------------------
    @property
    def auto_load(self) -> bool:
        return bool(self.get(AUTO_LOAD))

    @auto_load.setter
    def auto_load(self, on: bool) -> None:
        self.set(AUTO_LOAD, bool(on))

    @property
    def last_boundary(self) -> Optional[dict[str, Any]]:
        try:
            value = json.loads(self.get(LAST_BOUNDARY) or "null")
        except ValueError:
            return None
        return value if isinstance(value, dict) and value.get("name") else None

    @last_boundary.setter
    def last_boundary(self, boundary: Optional[dict[str, Any]]) -> None:
        if boundary:
            self.set(LAST_BOUNDARY, json.dumps({"name": boundary["name"], "name_long": boundary.get("name_long")}))
        else:
            self.remove(LAST_BOUNDARY)

    @property
    def checked_datasets(self) -> list[str]:
        try:
            value = json.loads(self.get(CHECKED_DATASETS) or "[]")
        except ValueError:
            return []
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

    @checked_datasets.setter
    def checked_datasets(self, names: list[str]) -> None:
        self.set(CHECKED_DATASETS, json.dumps(sorted(names)))


settings = PluginSettings()
