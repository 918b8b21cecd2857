"""processors.fetch against a loopback origin (tests/sources.py) with switchable faults."""
from __future__ import annotations

import hashlib
import io
import os
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile
import zlib
from pathlib import Path

import pytest

from processors.errors import Cancelled, SourceCorrupt, SourceUnavailable, UnsafeArchive
from processors.fetch import cache_path, extract_archive, fetch, mirror_url, source_record
from sources import Fault, OriginServer  # tests/sources.py: pytest puts tests/ on sys.path

ROOT = Path(__file__).resolve().parent.parent
PATH = "/data/v1/global_grid.bin"
PAYLOAD = os.urandom(300_000)
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
SHA1 = hashlib.sha1(PAYLOAD).hexdigest()
FAST = dict(retries=3, backoff=0.01, timeout=5)


@pytest.fixture
def origin(tmp_path):
    """An origin serving PAYLOAD at PATH."""
    root = tmp_path / "origin"
    (root / PATH.lstrip("/")).parent.mkdir(parents=True)
    (root / PATH.lstrip("/")).write_bytes(PAYLOAD)
    with OriginServer(root) as server:
        yield server


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def closed_port_url(path=PATH) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_downloads_and_verifies_sha256_and_size(origin, cache):
    target = cache / "global_grid.bin"
    got = fetch(origin.url + PATH, target, sha256=SHA256, size=len(PAYLOAD), **FAST)
    assert got == target and target.read_bytes() == PAYLOAD
    assert not target.with_name("global_grid.bin.part").exists()
    record = source_record(target)
    assert record["sha256"] == SHA256 and record["sha1"] == SHA1 and record["size"] == len(PAYLOAD)


def test_second_fetch_is_served_from_the_cache(origin, cache):
    target = cache / "f.bin"
    fetch(origin.url + PATH, target, sha1=SHA1, **FAST)
    fetch(origin.url + PATH, target, sha1=SHA1, **FAST)
    assert origin.requests[PATH] == 1


def test_broken_transfer_is_resumed_with_range_and_hash_matches(origin, cache):
    origin.faults[PATH] = Fault(break_after=100_000)
    target = cache / "f.bin"
    fetch(origin.url + PATH, target, sha256=SHA256, sha1=SHA1, **FAST)
    assert target.read_bytes() == PAYLOAD
    assert origin.requests[PATH] == 2
    assert [r for _, r in origin.ranges] == [None, "bytes=100000-"]


def test_server_ignoring_range_restarts_from_zero(origin, cache):
    origin.faults[PATH] = Fault(break_after=100_000, ignore_range=True)
    target = cache / "f.bin"
    fetch(origin.url + PATH, target, sha256=SHA256, **FAST)
    assert target.read_bytes() == PAYLOAD


def test_transient_server_errors_are_retried(origin, cache):
    origin.faults[PATH] = Fault(status=503, status_times=2)
    fetch(origin.url + PATH, cache / "f.bin", sha256=SHA256, **FAST)
    assert origin.requests[PATH] == 3


def test_wrong_hash_is_an_error_and_leaves_nothing_in_the_cache(origin, cache):
    with pytest.raises(SourceCorrupt, match="sha256"):
        fetch(origin.url + PATH, cache / "f.bin", sha256="0" * 64, **FAST)
    assert [f for f in files_under(cache) if not f.endswith(".lock")] == []


def test_wrong_sha1_or_size_is_an_error(origin, cache):
    with pytest.raises(SourceCorrupt, match="sha1"):
        fetch(origin.url + PATH, cache / "a.bin", sha1="0" * 40, **FAST)
    with pytest.raises(SourceCorrupt, match="size"):
        fetch(origin.url + PATH, cache / "b.bin", size=len(PAYLOAD) + 1, **FAST)
    assert [f for f in files_under(cache) if not f.endswith(".lock")] == []


@pytest.mark.parametrize("fault", [Fault(html=True), Fault(html_without_content_type=True)], ids=["content-type", "body"])
def test_html_page_instead_of_data_is_refused(origin, cache, fault):
    origin.faults[PATH] = fault
    with pytest.raises(SourceCorrupt, match="HTML") as err:
        fetch(origin.url + PATH, cache / "f.bin", **FAST)
    assert origin.url + PATH in str(err.value)
    assert [f for f in files_under(cache) if not f.endswith(".lock")] == []


def test_html_is_accepted_when_the_url_is_an_html_page(origin, cache):
    origin.faults["/listing/index.html"] = Fault(html=True)
    got = fetch(origin.url + "/listing/index.html", cache / "index.html", **FAST)
    assert got.read_bytes().startswith(b"<!DOCTYPE html>")


def test_unreachable_origin_raises_source_unavailable_naming_the_url(cache):
    url = closed_port_url()
    with pytest.raises(SourceUnavailable) as err:
        fetch(url, cache / "f.bin", retries=1, backoff=0.01, timeout=2)
    assert url in str(err.value)
    assert not isinstance(err.value, SourceCorrupt)


def test_missing_file_is_not_retried(origin, cache):
    url = origin.url + "/data/v1/missing.bin"
    with pytest.raises(SourceUnavailable, match="404") as err:
        fetch(url, cache / "missing.bin", **FAST)
    assert url in str(err.value)
    assert origin.requests["/data/v1/missing.bin"] == 1


def test_cancellation_keeps_the_part_file_for_a_later_resume(origin, cache):
    origin.faults[PATH] = Fault(break_after=100_000)
    target = cache / "f.bin"
    calls = []

    def check():
        calls.append(1)
        if len(calls) > 2:
            raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        fetch(origin.url + PATH, target, check_cancelled=check, **FAST)
    assert not target.exists()
    fetch(origin.url + PATH, target, sha256=SHA256, **FAST)
    assert target.read_bytes() == PAYLOAD


def test_mirror_url_layout():
    url = "https://jeodpp.jrc.ec.europa.eu/ftp/GHS%20POP/file.zip?download=1"
    assert mirror_url(url, "http://mirror.local/sources/") == "http://mirror.local/sources/jeodpp.jrc.ec.europa.eu/ftp/GHS%20POP/file.zip"
    assert mirror_url(url, "/srv/mirror") == "/srv/mirror/jeodpp.jrc.ec.europa.eu/ftp/GHS POP/file.zip"
    assert mirror_url(url, "file:///srv/mirror") == "/srv/mirror/jeodpp.jrc.ec.europa.eu/ftp/GHS POP/file.zip"
    assert cache_path("http://h:8080/a/b.tif", Path("/c")) == Path("/c/h/a/b.tif")
    with pytest.raises(ValueError):
        mirror_url("https://h/a/%2e%2e/%2e%2e/etc/passwd", "/srv/mirror")


def test_mirror_url_replaces_an_unreachable_origin(tmp_path, cache):
    origin_url = closed_port_url("/data/v1/global_grid.bin")
    mirror_root = tmp_path / "mirror"
    (mirror_root / "127.0.0.1/data/v1").mkdir(parents=True)
    (mirror_root / "127.0.0.1/data/v1/global_grid.bin").write_bytes(PAYLOAD)
    with OriginServer(mirror_root) as mirror:
        got = fetch(origin_url, cache / "f.bin", sha256=SHA256, mirror=mirror.url + "/", **FAST)
        assert got.read_bytes() == PAYLOAD
        assert mirror.requests["/127.0.0.1/data/v1/global_grid.bin"] == 1


def test_mirror_folder_replaces_an_unreachable_origin(tmp_path, cache):
    origin_url = closed_port_url("/data/v1/global_grid.bin")
    mirror_root = tmp_path / "mirror"
    (mirror_root / "127.0.0.1/data/v1").mkdir(parents=True)
    (mirror_root / "127.0.0.1/data/v1/global_grid.bin").write_bytes(PAYLOAD)
    got = fetch(origin_url, cache / "f.bin", sha256=SHA256, mirror=str(mirror_root), **FAST)
    assert got.read_bytes() == PAYLOAD
    with pytest.raises(SourceUnavailable, match="mirror") as err:
        fetch(closed_port_url("/other.bin"), cache / "o.bin", mirror=str(mirror_root), **FAST)
    assert "/other.bin" in str(err.value)
    with pytest.raises(SourceCorrupt):
        fetch(origin_url, cache / "g.bin", sha256="1" * 64, mirror=str(mirror_root), **FAST)
    assert not (cache / "g.bin").exists() and not (cache / "g.bin.part").exists()


def test_two_threads_fetching_the_same_file_download_it_once(origin, cache):
    origin.faults[PATH] = Fault(delay=0.3)
    target = cache / "f.bin"
    errors = []

    def run():
        try:
            fetch(origin.url + PATH, target, sha256=SHA256, **FAST)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    assert origin.requests[PATH] == 1
    assert target.read_bytes() == PAYLOAD


def test_two_processes_fetching_the_same_file_download_it_once(origin, cache):
    origin.faults[PATH] = Fault(delay=0.5)
    target = cache / "f.bin"
    code = (
        "import sys; from pathlib import Path; from processors.fetch import fetch; "
        "fetch(sys.argv[1], Path(sys.argv[2]), sha256=sys.argv[3], retries=1, backoff=0.01, timeout=10)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, origin.url + PATH, str(target), SHA256], cwd=ROOT)
        for _ in range(2)
    ]
    assert [p.wait(30) for p in procs] == [0, 0]
    assert origin.requests[PATH] == 1
    assert target.read_bytes() == PAYLOAD


# --------------------------------------------------------------------------- archives


def make_zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def test_extracts_a_zip_with_folders(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"NE2_50M_SR/NE2_50M_SR.tif": b"tif", "NE2_50M_SR/README.txt": b"r", "top.txt": b"t"})
    out = extract_archive(archive, tmp_path / "out", max_bytes=1000)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in out) == [
        "NE2_50M_SR/NE2_50M_SR.tif", "NE2_50M_SR/README.txt", "top.txt"]
    assert (tmp_path / "out/NE2_50M_SR/NE2_50M_SR.tif").read_bytes() == b"tif"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    "members",
    [
        {"ok.txt": b"x", "../evil.txt": b"evil"},
        {"ok.txt": b"x", "sub/../../evil.txt": b"evil"},
        {"ok.txt": b"x", "/tmp/evil-absolute.txt": b"evil"},
        {"ok.txt": b"x", "..\\evil.txt": b"evil"},
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "backslash"],
)
def test_unsafe_zip_members_are_refused_and_nothing_is_written(tmp_path, members):
    work = tmp_path / "work"
    work.mkdir()
    archive = make_zip(work / "a.zip", members)
    with pytest.raises(UnsafeArchive):
        extract_archive(archive, work / "out", max_bytes=10_000)
    assert not (work / "out").exists() or files_under(work / "out") == []
    assert not (tmp_path / "evil.txt").exists() and not (work / "evil.txt").exists()
    assert not Path("/tmp/evil-absolute.txt").exists()
    assert sorted(p.name for p in work.iterdir()) == ["a.zip"]


def test_zip_symlink_is_refused(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"ok.txt": b"x"}, symlinks={"link": "/etc/passwd"})
    with pytest.raises(UnsafeArchive, match="link"):
        extract_archive(archive, tmp_path / "out", max_bytes=10_000)
    assert not (tmp_path / "out").exists()


def test_zip_bomb_over_the_limit_is_refused(tmp_path):
    archive = make_zip(tmp_path / "bomb.zip", {"zeros.bin": b"\0" * 5_000_000})
    assert archive.stat().st_size < 50_000
    with pytest.raises(UnsafeArchive, match="limit"):
        extract_archive(archive, tmp_path / "out", max_bytes=1_000_000)
    assert not (tmp_path / "out").exists()


def _lie_about_size(archive: Path, declared: int, crc_of: bytes | None = None) -> None:
    """Patch the declared uncompressed size (and optionally the CRC) of a one-member zip, in the
    local header (offsets 14/22) and the central directory (offsets 16/24)."""
    data = bytearray(archive.read_bytes())
    cd = data.rfind(b"PK\x01\x02")
    for offset in (22, cd + 24):
        data[offset:offset + 4] = declared.to_bytes(4, "little")
    if crc_of is not None:
        for offset in (14, cd + 16):
            data[offset:offset + 4] = zlib.crc32(crc_of).to_bytes(4, "little")
    archive.write_bytes(bytes(data))


def test_zip_with_lying_sizes_never_writes_past_the_declared_size(tmp_path):
    """2 MB of zeros declared as 100 bytes, under a 1 MB limit: the declared total passes the
    limit check, and the reader stops at the declared size, so the limit holds while streaming.
    With the real CRC the truncated member is refused as damaged and nothing is left; with a CRC
    forged to match the first 100 bytes exactly those 100 bytes are written, never 2 MB."""
    archive = make_zip(tmp_path / "bomb.zip", {"zeros.bin": b"\0" * 2_000_000})
    _lie_about_size(archive, 100)
    with pytest.raises(SourceCorrupt, match="damaged archive.*CRC"):
        extract_archive(archive, tmp_path / "out", max_bytes=1_000_000)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bomb.zip"]  # no staging folder left

    _lie_about_size(archive, 100, crc_of=b"\0" * 100)
    (extracted,) = extract_archive(archive, tmp_path / "out", max_bytes=1_000_000)
    assert extracted.stat().st_size == 100


def test_tar_archives_are_checked_too(tmp_path):
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tf:
        info = tarfile.TarInfo("dir/a.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    assert [p.name for p in extract_archive(good, tmp_path / "out", max_bytes=100)] == ["a.txt"]

    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tf:
        link = tarfile.TarInfo("link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(UnsafeArchive):
        extract_archive(bad, tmp_path / "out2", max_bytes=100)
    assert not (tmp_path / "out2").exists()
