"""Nothing read or written outside the package and processing roots (symbolic links included),
no 5xx for odd paths, and no public bind without a token."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from backend.cli import _check_exposure
from backend.settings import Settings
from tests.conftest import ROOT, free_port
from tests.reliability.local_queue import ADMIN1, TEST, files_under, make_queue, states


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


@pytest.mark.parametrize("path, status", [
    ("/packages/" + "x" * 256, 400),
    ("/packages/gambia/" + "y" * 300 + "/index.html", 400),
    ("/packages/" + "a/" * 2100, 400),
    ("/packages/linked/secret.txt", 400),
    ("/packages/linked_hidden/index.html", 400),
    ("/packages/%2e%2e/boundaries.db", 404),
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
