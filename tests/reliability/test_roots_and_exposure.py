"""Nothing read or written outside the package and processing roots (symbolic links included),
no 5xx for odd paths, and no public bind without a token."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backend.cli import _check_exposure
from backend.settings import Settings
from processors.sources import SourceCache
from tests.conftest import ROOT, free_port
from tests.reliability.local_queue import ADMIN1, RASTER, TEST, files_under, make_queue, states


def test_a_datasets_folder_linked_outside_the_root_fails_the_job_and_writes_nothing_there(tmp_path, seeded_boundaries_db):
    queue = make_queue(tmp_path / "data", seeded_boundaries_db)
    outside = tmp_path / "outside"
    outside.mkdir()
    package = queue.packages.root / "gambia"
    package.mkdir(parents=True)
    (package / "datasets").symlink_to(outside, target_is_directory=True)
    job_id = queue.submit(boundary_name="gambia", processors=[TEST])
    status = queue.status(job_id)
    (entry,) = status["job_group_processors"]
    assert entry["job_status"] == "FAILURE"
    assert "is a symbolic link" in (entry["job_result"].get("failed") or "")
    assert files_under(outside) == []


def test_a_scratch_folder_linked_outside_the_processing_root_fails_the_job(tmp_path, seeded_boundaries_db):
    queue = make_queue(tmp_path / "data", seeded_boundaries_db)
    outside = tmp_path / "outside"
    outside.mkdir()
    queue.settings.localfs_processing_backend_root.mkdir(parents=True, exist_ok=True)
    (queue.settings.localfs_processing_backend_root / "tmp").symlink_to(outside, target_is_directory=True)
    job_id = queue.submit(boundary_name="gambia", processors=[ADMIN1])
    assert states(queue, job_id) == {ADMIN1: "FAILURE"}
    assert "is a symbolic link" in queue.status(job_id)["job_group_processors"][0]["job_result"]["failed"]
    assert files_under(outside) == []
    assert queue.status(job_id)["job_group_status"] == "COMPLETE"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under `folder` (links not followed): its size and modification time."""
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


# What is replaced by a symbolic link to a folder outside, once a first job filled the cache.
CACHE_LINKS = {
    "the cached archive": "",
    "its fetch record": ".fetch.json",
    "its lock": ".lock",
    "its download (.part), the archive gone": ".part",
    "its extraction folder": ".d",
    "a folder on the way to it": "/..",
}


@pytest.mark.parametrize("linked", list(CACHE_LINKS))
def test_a_source_cache_entry_linked_outside_fails_the_job_and_nothing_outside_is_touched(
        tmp_path, seeded_boundaries_db, raster_mirror, linked):
    from processors.builtin.natural_earth_raster import SOURCE_URL, NaturalEarthRaster

    mirror = str(raster_mirror(NaturalEarthRaster, rgb=True, width=360, height=180)[0])
    queue = make_queue(tmp_path / "data", seeded_boundaries_db, source_mirror=mirror)
    assert states(queue, queue.submit(boundary_name="gambia", processors=[RASTER])) == {RASTER: "SUCCESS"}
    archive = SourceCache(queue.settings.localfs_processing_backend_root / "natural_earth_raster" / "version_1"
                          / "source_data").path(SOURCE_URL)
    suffix = CACHE_LINKS[linked]
    entry = archive.parent if suffix == "/.." else archive.with_name(archive.name + suffix)
    outside = tmp_path / "outside"
    outside.mkdir()
    if suffix == ".part":  # a download to come: without the check it would be written outside
        archive.unlink()
        (outside / entry.name).write_bytes(b"")
    else:  # an entry a later run would read (or write into) where it points
        shutil.move(entry, outside / entry.name)
    entry.symlink_to(outside / entry.name)
    before = snapshot(outside)

    job_id = queue.submit(boundary_name="gambia", processors=[RASTER], replace=True)
    (result,) = queue.status(job_id)["job_group_processors"]
    assert result["job_status"] == "FAILURE"
    assert f"PathOutsideRoot - {entry} is a symbolic link" in result["job_result"]["failed"], result
    assert snapshot(outside) == before
    assert entry.is_symlink()  # refused, not followed, and not removed either


def test_an_extracted_member_replaced_by_a_link_is_extracted_again_and_its_target_left_alone(
        tmp_path, seeded_boundaries_db, raster_mirror):
    from processors.builtin.natural_earth_raster import SOURCE_URL, NaturalEarthRaster

    mirror = str(raster_mirror(NaturalEarthRaster, rgb=True, width=360, height=180)[0])
    queue = make_queue(tmp_path / "data", seeded_boundaries_db, source_mirror=mirror)
    assert states(queue, queue.submit(boundary_name="gambia", processors=[RASTER])) == {RASTER: "SUCCESS"}
    cache = SourceCache(queue.settings.localfs_processing_backend_root / "natural_earth_raster" / "version_1" / "source_data")
    member = cache.cached_member(SOURCE_URL, "NE2_50M_SR/NE2_50M_SR.tif")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.move(member, outside / member.name)
    member.symlink_to(outside / member.name)
    before = snapshot(outside)
    job_id = queue.submit(boundary_name="gambia", processors=[RASTER], replace=True)
    assert states(queue, job_id) == {RASTER: "SUCCESS"}
    assert member.is_file() and not member.is_symlink()
    assert snapshot(outside) == before


def test_a_worker_start_cleans_nothing_through_links(tmp_path, seeded_boundaries_db):
    queue = make_queue(tmp_path / "data", seeded_boundaries_db)
    assert states(queue, queue.submit(boundary_name="gambia", processors=[TEST])) == {TEST: "SUCCESS"}
    outside = tmp_path / "outside"
    # What a clean start removes inside the roots (an unlisted dataset version, a dead job's
    # scratch, an empty download), put outside and linked to from where it looks.
    (outside / "datasets" / "stray" / "version_1").mkdir(parents=True)
    (outside / "tmp" / ("0" * 32) / TEST).mkdir(parents=True)
    (outside / "source_data").mkdir()
    (outside / "source_data" / "stalled.tif.part").write_bytes(b"")
    processing = queue.settings.localfs_processing_backend_root
    (queue.packages.root / "senegal").mkdir()
    (queue.packages.root / "senegal" / "datasets").symlink_to(outside / "datasets")
    (processing / "tmp").rmdir()
    (processing / "tmp").symlink_to(outside / "tmp")
    (processing / "storm" / "version_1").mkdir(parents=True)
    (processing / "storm" / "version_1" / "source_data").symlink_to(outside / "source_data")
    before = snapshot(outside)
    done = queue.clean_start()
    assert snapshot(outside) == before
    assert any(line.startswith("left scratch alone") and "is a symbolic link" in line for line in done), done
    assert any(line.startswith(f"left {queue.packages.root / 'senegal'} alone") for line in done), done


@pytest.mark.parametrize("path, status", [
    ("/packages/" + "x" * 256, 400),
    ("/packages/gambia/" + "y" * 300 + "/index.html", 400),
    ("/packages/" + "a/" * 2100, 400),
    ("/packages/linked/secret.txt", 400),
    ("/packages/linked_hidden/index.html", 400),
    ("/packages/%2e%2e/boundaries.db", 404),
    ("/v1/packages/linked_datasets", 400),
])
def test_odd_package_paths_are_4xx_and_links_are_not_followed(shared_served, path, status):
    packages = shared_served.data_dir / "packages"
    secret = shared_served.data_dir.parent / "secret.txt"
    secret.write_text("SECRET-OUTSIDE")
    if not (packages / "linked").exists():
        (packages / "linked").mkdir(parents=True)
        (packages / "linked" / "secret.txt").symlink_to(secret)
        (packages / "linked_hidden").mkdir()
        (packages / "linked_hidden" / ".lock").write_text("SECRET-HIDDEN")
        (packages / "linked_hidden" / "index.html").symlink_to(packages / "linked_hidden" / ".lock")
        (secret.parent / "SECRET-datasets" / "test_processor" / "version_1").mkdir(parents=True)
        (packages / "linked_datasets").mkdir()
        (packages / "linked_datasets" / "datasets").symlink_to(secret.parent / "SECRET-datasets")
    response = shared_served.get(path)
    assert response.status_code == status, response.text
    assert b"SECRET" not in response.content and str(shared_served.data_dir).encode() not in response.content


def run_serve(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CCGAUTOPKG_")}
    environ.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-m", "backend.cli", "serve", "--port", str(free_port()), *args],
                          env=environ, cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.org"])
def test_serving_a_public_address_without_a_token_refuses_to_start(tmp_path, host):
    done = run_serve("--host", host, CCGAUTOPKG_DATA_DIR=str(tmp_path / "data"))
    assert done.returncode != 0
    assert f"refusing to serve on {host} without an API token" in done.stderr
    assert not (tmp_path / "data").exists()  # refused before opening anything


def test_the_bind_rule_allows_loopback_a_token_or_a_logged_override(caplog):
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        _check_exposure(Settings(host=host), allow_public_without_token=False)
    _check_exposure(Settings(host="0.0.0.0", api_token="s3cret"), allow_public_without_token=False)
    with caplog.at_level(logging.WARNING, logger="autopkg"):
        _check_exposure(Settings(host="0.0.0.0"), allow_public_without_token=True)
    assert "SERVING ON 0.0.0.0 WITHOUT AN API TOKEN" in caplog.text
