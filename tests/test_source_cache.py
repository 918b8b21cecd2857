"""The source cache heals: every corrupt-cache case of issue 8, served from a loopback origin.

Each case runs a real processor twice against `tests/sources.py`'s origin: a bad source either
fails clearly once (fetched twice, then `SourceCorrupt`/`UnsafeArchive` naming it, nothing of it
left in the cache) and heals on the next run once the origin is fixed, or heals at once (a
cached file damaged after it was fetched is fetched or extracted again).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import pytest
import rasterio

from processors.builtin.natural_earth_raster import NaturalEarthRaster
from processors.builtin.storm import StormGlobalMosaics
from processors.errors import SourceCorrupt, UnsafeArchive
from processors.fetch import mirror_url
from processors.outputs import SYNTHETIC_TAG, file_facts
from processors.samples import SYNTHETIC_MANIFEST
from sources import Fault, OriginServer, synthetic_raster
from test_catalogue import BOUNDARY, make_context, write_tif


class OneStorm(StormGlobalMosaics):
    sources = StormGlobalMosaics.sources[:1]


STORM_URL = OneStorm.sources[0].url
NE_URL = NaturalEarthRaster.sources[0].url
NE_MEMBER = NaturalEarthRaster.sources[0].member


def url_path(url: str) -> str:
    """The path the origin server sees for `url` (kept encoded, `//` kept)."""
    return mirror_url(url, "http://origin")[len("http://origin"):]


@pytest.fixture
def origin(tmp_path):
    """An origin holding a good STORM GeoTIFF (6x3 tiles of 256) and a good NE2 zip."""
    root = tmp_path / "origin"
    tif = Path(mirror_url(STORM_URL, str(root)))
    tif.parent.mkdir(parents=True)
    synthetic_raster(tif, width=1440, height=720, holes=False)
    write_ne_zip(Path(mirror_url(NE_URL, str(root))))
    with OriginServer(root) as server:
        server.root_dir = root
        yield server


def write_ne_zip(path: Path, *, seed: int = 0, extra: dict[str, bytes] | None = None) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    tif = write_tif(path.parent / "staging" / "NE2_50M_SR.tif", seed=seed, rgb=True, width=360, height=180)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(tif, NE_MEMBER)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def origin_file(origin, url: str) -> Path:
    return Path(mirror_url(url, str(origin.root_dir)))


def run(cls, tmp_path: Path, origin, name: str):
    ctx, reports = make_context(tmp_path, origin.url, source_dir=tmp_path / "sources", run=name)
    return cls().generate(BOUNDARY, ctx), ctx, reports


def cached_files(tmp_path: Path) -> list[str]:
    root = tmp_path / "sources"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def assert_fails_clearly_then_heals(cls, url, tmp_path, origin, error, match, fix) -> None:
    with pytest.raises(error, match=match) as info:
        run(cls, tmp_path, origin, "bad")
    assert "fetched again once" in str(info.value) and url in str(info.value)
    assert origin.requests[url_path(url)] == 2  # discarded once, fetched again, then given up
    assert cached_files(tmp_path) == []  # nothing of it is trusted later
    assert not any((tmp_path / "bad" / "out").iterdir())
    fix()
    out, ctx, _ = run(cls, tmp_path, origin, "healed")
    assert len(out.files) == 1 and (ctx.output_dir / out.files[0]).is_file()
    assert ctx.sources.record(url).sha256 == hashlib.sha256(origin_file(origin, url).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- bad origins


@pytest.mark.parametrize("case", ["truncated-with-matching-length", "random-bytes", "empty-200"])
def test_a_bad_geotiff_fails_clearly_once_then_heals_when_the_origin_is_fixed(tmp_path, origin, case):
    path = origin_file(origin, STORM_URL)
    good = path.read_bytes()
    if case == "truncated-with-matching-length":
        path.write_bytes(good[: len(good) // 2])  # served whole, Content-Length of the truncated file
    elif case == "random-bytes":
        path.write_bytes(os.urandom(len(good)))
    else:
        origin.faults[url_path(STORM_URL)] = Fault(body=b"")

    def fix():
        path.write_bytes(good)
        origin.faults.clear()

    match = "empty" if case == "empty-200" else "block|not a raster"
    assert_fails_clearly_then_heals(OneStorm, STORM_URL, tmp_path, origin, SourceCorrupt, match, fix)


@pytest.mark.parametrize("case", ["not-a-zip", "zip-with-dotdot", "zip-bomb"])
def test_a_bad_archive_fails_clearly_once_leaves_nothing_then_heals(tmp_path, origin, case):
    path = origin_file(origin, NE_URL)
    good = path.read_bytes()
    if case == "not-a-zip":
        path.write_bytes(os.urandom(len(good)))
        error, match = SourceCorrupt, "neither a zip"
    elif case == "zip-with-dotdot":
        write_ne_zip(path, extra={"../../../../evil.txt": b"escaped"})
        error, match = UnsafeArchive, "outside the archive"
    else:  # 60 MB of zeros in a zip of about 60 KB: 1000 times its size
        write_ne_zip(path, extra={"padding.bin": b"\0" * 60_000_000})
        assert path.stat().st_size < 200_000
        error, match = UnsafeArchive, "archive bomb"
    assert_fails_clearly_then_heals(NaturalEarthRaster, NE_URL, tmp_path, origin, error, match,
                                    lambda: path.write_bytes(good))
    assert not list(tmp_path.rglob("evil.txt"))
    assert not [p for p in (tmp_path / "sources").rglob(".*extract-*")]  # no staging left behind


# --------------------------------------------------------------------------- damaged cache


def test_a_cached_geotiff_overwritten_with_random_bytes_is_fetched_again(tmp_path, origin):
    _, ctx, _ = run(OneStorm, tmp_path, origin, "first")
    cached = ctx.sources.path(STORM_URL)
    cached.write_bytes(os.urandom(cached.stat().st_size))  # same size
    out, ctx, _ = run(OneStorm, tmp_path, origin, "second")
    assert out.files and origin.requests[url_path(STORM_URL)] == 2
    assert cached.read_bytes() == origin_file(origin, STORM_URL).read_bytes()


def test_content_checks_run_once_per_copy_of_a_cached_file(tmp_path, origin, monkeypatch):
    """GDAL opens a cached GeoTIFF to check it once per copy, not at every use: the result is
    kept in its fetch record until the file is modified (or fetched again)."""
    import processors.catalogue as catalogue

    checked, check_raster = [], catalogue.check_raster
    monkeypatch.setattr(catalogue, "check_raster", lambda path: (checked.append(path), check_raster(path))[-1])
    _, ctx, _ = run(OneStorm, tmp_path, origin, "first")
    cached = ctx.sources.path(STORM_URL)
    run(OneStorm, tmp_path, origin, "second")
    assert checked == [cached]
    st = cached.stat()
    os.utime(cached, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched: same bytes, checked again
    out, _, _ = run(OneStorm, tmp_path, origin, "third")
    assert checked == [cached, cached] and out.files and origin.requests[url_path(STORM_URL)] == 1


def test_a_damaged_tile_found_while_clipping_is_fetched_again_in_the_same_run(tmp_path, origin):
    """Same size, same modification time, first and last blocks intact: only reading the
    window finds it; the source is discarded, fetched again and the clip succeeds."""
    _, ctx, _ = run(OneStorm, tmp_path, origin, "first")
    cached = ctx.sources.path(STORM_URL)
    with rasterio.open(cached) as ds:  # a tile inside the boundary's window
        offset = int(ds.get_tag_item("BLOCK_OFFSET_3_1", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_3_1", "TIFF", bidx=1))
    st = cached.stat()
    with open(cached, "r+b") as f:
        f.seek(offset)
        f.write(os.urandom(size))
    os.utime(cached, ns=(st.st_atime_ns, st.st_mtime_ns))
    out, ctx, _ = run(OneStorm, tmp_path, origin, "second")
    assert out.files and origin.requests[url_path(STORM_URL)] == 2
    assert cached.read_bytes() == origin_file(origin, STORM_URL).read_bytes()


def test_a_truncated_extracted_natural_earth_raster_is_extracted_again(tmp_path, origin):
    _, ctx, _ = run(NaturalEarthRaster, tmp_path, origin, "first")
    member = ctx.sources.cached_member(NE_URL, NE_MEMBER)
    member.write_bytes(member.read_bytes()[:1000])
    out, ctx, _ = run(NaturalEarthRaster, tmp_path, origin, "second")
    assert out.files and origin.requests[url_path(NE_URL)] == 1  # the cached zip was fine
    assert member.stat().st_size > 1000


def test_an_archive_fetched_again_with_new_content_is_extracted_again(tmp_path, origin):
    _, ctx, _ = run(NaturalEarthRaster, tmp_path, origin, "first")
    with rasterio.open(ctx.sources.cached_member(NE_URL, NE_MEMBER)) as ds:
        before = ds.read(1)
    write_ne_zip(origin_file(origin, NE_URL), seed=7)  # the origin publishes a new version ...
    archive = ctx.sources.path(NE_URL)
    archive.write_bytes(archive.read_bytes()[:-10])  # ... and the cached copy is found damaged
    out, ctx, _ = run(NaturalEarthRaster, tmp_path, origin, "second")
    assert origin.requests[url_path(NE_URL)] == 2
    with rasterio.open(ctx.sources.cached_member(NE_URL, NE_MEMBER)) as ds:
        assert not (ds.read(1) == before).all()


# --------------------------------------------------------------------------- mirrors, progress


def _folder_mirror(tmp_path: Path, *, tagged: bool, manifest: bool) -> Path:
    folder = tmp_path / "mirror"
    tif = Path(mirror_url(STORM_URL, str(folder)))
    tif.parent.mkdir(parents=True)
    synthetic_raster(tif, width=360, height=180, holes=False)
    if tagged:
        with rasterio.open(tif, "r+") as ds:
            ds.update_tags(**{SYNTHETIC_TAG: "SYNTHETIC: a stand-in"})
    if manifest:
        data = tif.read_bytes()
        (folder / SYNTHETIC_MANIFEST).write_text(json.dumps({"files": {STORM_URL: {
            "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}}}))
    return folder


def test_a_manifest_never_passes_an_unmarked_file(tmp_path):
    folder = _folder_mirror(tmp_path, tagged=False, manifest=True)
    ctx, _ = make_context(tmp_path, str(folder))
    with pytest.raises(SourceCorrupt, match="does not carry the SYNTHETIC marker"):
        OneStorm().generate(BOUNDARY, ctx)


@pytest.mark.parametrize("tagged", [True, False], ids=["sample-mirror", "real-looking-mirror"])
def test_synthetic_origin_is_carried_into_the_outputs_only_for_stand_ins(tmp_path, tagged):
    folder = _folder_mirror(tmp_path, tagged=tagged, manifest=tagged)
    ctx, _ = make_context(tmp_path, str(folder))
    out = OneStorm().generate(BOUNDARY, ctx)
    assert out.synthetic is tagged and ctx.sources.synthetic is tagged
    assert file_facts(ctx.output_dir / out.files[0]).synthetic is tagged
    record = ctx.sources.record(STORM_URL)
    assert record.mirror == mirror_url(STORM_URL, str(folder)) and record.bytes > 0 and record.retrieved


def test_download_progress_reaches_the_jobs_percent_and_step(tmp_path, origin):
    _, _, reports = run(OneStorm, tmp_path, origin, "first")
    downloads = [(p, s) for p, s in reports if "downloading" in s and "MB" in s]
    assert downloads and all(0 <= p <= 50 for p, _ in downloads), reports
    assert "STORM_FIXED_RETURN_PERIODS_constant_10_YR_RP.tif" in downloads[0][1]


def test_the_readme_third_party_processor_runs_through_the_source_cache(tmp_path):
    """The README's example, executed as written, against a mirror of its (made-up) origin."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (code,) = [block for block in readme.split("```python\n")[1:] if "class FloodDepth" in block]
    namespace: dict = {}
    exec(code.split("```", 1)[0], namespace)
    FloodDepth = namespace["FloodDepth"]
    root = tmp_path / "origin"
    for rp in ("10", "100"):
        tif = Path(mirror_url(namespace["SOURCE"].format(rp=rp), str(root)))
        tif.parent.mkdir(parents=True, exist_ok=True)
        synthetic_raster(tif, width=360, height=180, holes=False)
    with OriginServer(root) as server:
        ctx, reports = make_context(tmp_path, server.url)
        out = FloodDepth().generate(BOUNDARY, ctx)
        FloodDepth().generate(BOUNDARY, make_context(tmp_path, server.url, run="again")[0])
        assert sum(server.requests.values()) == 2  # the second run was served by the cache
    assert [d.dimensions for d in out.details] == [{"return_period": "10"}, {"return_period": "100"}]
    assert [r.url for r in ctx.sources.records] == [namespace["SOURCE"].format(rp=rp) for rp in ("10", "100")]
    assert any("downloading" in step for _, step in reports)
