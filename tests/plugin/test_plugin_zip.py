"""`make plugin-zip` builds a zip that QGIS's "Install from ZIP" accepts, and the plugin loads from it."""
from __future__ import annotations

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_plugin_zip_installs_into_a_fresh_profile_and_loads(tmp_path, qgis_iface, monkeypatch):
    subprocess.run(["make", "-s", "plugin-zip"], cwd=ROOT, check=True, capture_output=True)
    archive = ROOT / "dist" / "ccg_autopkg.zip"
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        assert {n.split("/")[0] for n in names} == {"ccg_autopkg"}
        for required in ("__init__.py", "metadata.txt", "plugin.py", "gui/ui/dock.ui", "gui/ui/options.ui", "gui/ui/slices.ui", "api/contract.py", "icon.svg"):
            assert f"ccg_autopkg/{required}" in names
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        plugins = tmp_path / "profiles/default/python/plugins"
        zf.extractall(plugins)

    meta = configparser.ConfigParser(interpolation=None)
    meta.read(plugins / "ccg_autopkg/metadata.txt")
    top = configparser.ConfigParser(interpolation=None)
    top.read(ROOT / "metadata.txt")
    assert dict(meta["general"]) == dict(top["general"])

    monkeypatch.syspath_prepend(str(plugins))
    import ccg_autopkg

    assert Path(ccg_autopkg.__file__).parent == plugins / "ccg_autopkg"
    from ccg_autopkg.__about__ import __version__

    assert __version__ == top["general"]["version"]
    plugin = ccg_autopkg.classFactory(qgis_iface)
    plugin.initGui()
    plugin.unload()
    for name in [m for m in sys.modules if m == "ccg_autopkg" or m.startswith("ccg_autopkg.")]:
        del sys.modules[name]
