"""Plugin metadata read from `metadata.txt` (the repository's top-level file is the single source).

In an installed plugin (zip or development link) `metadata.txt` sits inside the plugin folder;
in a source checkout it is the repository's top-level `metadata.txt` next to `qgis_plugin/`.
"""
from __future__ import annotations

import configparser
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent


def metadata_path() -> Path:
    for candidate in (PLUGIN_DIR / "metadata.txt", PLUGIN_DIR.parent / "metadata.txt"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"metadata.txt not found in {PLUGIN_DIR} or {PLUGIN_DIR.parent}")


def read_metadata(path: Path | None = None) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path or metadata_path(), encoding="utf-8")
    return dict(parser["general"])


_META = read_metadata()

__title__ = _META.get("name", "CCG AutoPackaging")
__version__ = _META.get("version", "0.0.0")
__summary__ = _META.get("description", "")
__author__ = _META.get("author", "")
__email__ = _META.get("email", "")
__uri_homepage__ = _META.get("homepage", "")
__uri_repository__ = _META.get("repository", "")
__uri_tracker__ = _META.get("tracker", "")
__qgis_minimum_version__ = _META.get("qgisminimumversion", "")

PLUGIN_NAME = __title__
SETTINGS_PREFIX = "ccg_autopkg"
ICON_PATH = str(PLUGIN_DIR / "icon.svg")
