"""GDAL settings of worker processes (backend/cli.py WORKER_GDAL_DEFAULTS)."""
from __future__ import annotations

import numpy as np
from osgeo import gdal

from backend.cli import WORKER_GDAL_DEFAULTS, _worker_environment

READDIR = "GDAL_DISABLE_READDIR_ON_OPEN"


def test_workers_skip_gdals_folder_listing_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv(READDIR, raising=False)
    _worker_environment()
    assert gdal.GetConfigOption(READDIR) == WORKER_GDAL_DEFAULTS[READDIR] == "TRUE"
    monkeypatch.setenv(READDIR, "FALSE")  # a site's own choice stays
    _worker_environment()
    assert gdal.GetConfigOption(READDIR) == "FALSE"


def _with_external_overviews(path) -> str:
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 64, 64, 1, gdal.GDT_Byte)
    ds.SetGeoTransform((0, 1, 0, 0, 0, -1))
    ds.GetRasterBand(1).WriteArray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64))
    ds = None
    ds = gdal.Open(str(path))  # read-only: the overviews go into a side-car `.ovr`
    ds.BuildOverviews("NEAREST", [2])
    ds = None
    assert path.with_name(path.name + ".ovr").is_file()
    return str(path)


def test_side_car_files_are_still_found_with_the_worker_setting(tmp_path, monkeypatch):
    for i in range(50):  # a folder with other files, like a source cache
        (tmp_path / f"other-{i}.json").write_text("{}")
    monkeypatch.setenv(READDIR, WORKER_GDAL_DEFAULTS[READDIR])
    assert gdal.Open(_with_external_overviews(tmp_path / "found.tif")).GetRasterBand(1).GetOverviewCount() == 1
    # what the setting avoids: EMPTY_DIR would have taken the folder as empty and missed it
    monkeypatch.setenv(READDIR, "EMPTY_DIR")
    assert gdal.Open(_with_external_overviews(tmp_path / "missed.tif")).GetRasterBand(1).GetOverviewCount() == 0
