"""Gridfinder (lines kept whole + two rasters) and WRI power plants (zip -> CSV -> points) end-to-end
against generated sources laid out like their origins, served by the loopback origin server.

The expected vector output is computed independently with shapely: the source features that
intersect the boundary polygon, unclipped (count, total length, attributes)."""
from __future__ import annotations

import csv
import hashlib
import random
import zipfile
from pathlib import Path

import fiona
import pytest
from fiona.crs import from_epsg
from shapely.geometry import shape

from processors.builtin.gridfinder import Gridfinder
from processors.builtin.wri_powerplants import SOURCE_SHA1, WriPowerplants
from processors.errors import SourceCorrupt
from processors.fetch import mirror_url
from processors.outputs import file_facts
from processors.registry import ProcessorRegistry
from sources import OriginServer
from test_catalogue import BOUNDARY, POLYGON, build_mirror, check_pixels, make_context

POWERPLANT_COLUMNS = (
    "country,country_long,name,gppd_idnr,capacity_mw,latitude,longitude,primary_fuel,other_fuel1,"
    "other_fuel2,other_fuel3,commissioning_year,owner,source,url,geolocation_source,wepp_id,"
    "year_of_capacity_data,generation_gwh_2013,generation_gwh_2014,generation_gwh_2015,"
    "generation_gwh_2016,generation_gwh_2017,generation_gwh_2018,generation_gwh_2019,"
    "generation_data_source,estimated_generation_gwh_2013,estimated_generation_gwh_2014,"
    "estimated_generation_gwh_2015,estimated_generation_gwh_2016,estimated_generation_gwh_2017,"
    "estimated_generation_note_2013,estimated_generation_note_2014,estimated_generation_note_2015,"
    "estimated_generation_note_2016,estimated_generation_note_2017"
).split(",")


@pytest.mark.parametrize("cls", [Gridfinder, WriPowerplants], ids=lambda c: c.full_name())
def test_metadata_is_complete(cls):
    meta = cls.metadata
    for field in ("description", "dataset", "author", "origin_url", "title", "title_long", "summary", "citation"):
        assert getattr(meta, field)
    assert meta.license.name == "CC-BY-4.0" and meta.license.path and meta.license.title
    assert cls.full_name() in ProcessorRegistry.discover().names()


# --------------------------------------------------------------------------- gridfinder


def write_grid(path: Path, n: int = 300) -> list[dict]:
    rng = random.Random(7)
    features = []
    for i in range(n):
        x, y = rng.uniform(-60, 80), rng.uniform(-50, 70)
        coords = [(x, y)]
        for _ in range(rng.randint(1, 4)):
            x, y = x + rng.uniform(-8, 8), y + rng.uniform(-8, 8)
            coords.append((x, y))
        features.append({"geometry": {"type": "LineString", "coordinates": coords},
                         "properties": {"source": f"line-{i}"}})
    path.parent.mkdir(parents=True, exist_ok=True)
    with fiona.open(path, "w", driver="GPKG", layer="grid", crs=from_epsg(4326),
                    schema={"geometry": "LineString", "properties": {"source": "str"}}) as dst:
        dst.writerecords(features)
    return features


def test_gridfinder_lines_kept_whole_and_rasters_clipped(tmp_path):
    root = tmp_path / "mirror"
    made = build_mirror(root, Gridfinder)
    features = write_grid(Path(mirror_url(Gridfinder.grid_url, str(root))))
    expected = {f["properties"]["source"]: shape(f["geometry"]) for f in features
                if shape(f["geometry"]).intersects(POLYGON)}
    assert 0 < len(expected) < len(features)

    with OriginServer(root) as server:
        ctx, reports = make_context(tmp_path, server.url)
        out = Gridfinder().generate(BOUNDARY, ctx)
    assert out.files == [
        "gridfinder-version_1-grid-testland.gpkg",
        "gridfinder-version_1-targets-testland.tif",
        "gridfinder-version_1-lv-testland.tif",
    ]
    assert Gridfinder.total_expected_files() == 3 and out.format == "mixed"
    assert sorted(p.name for p in ctx.output_dir.iterdir()) == sorted(out.files)
    assert reports[-1][0] == 100
    check_pixels(made["lv"], ctx.output_dir / out.files[2])
    check_pixels(made["targets"], ctx.output_dir / out.files[1])
    # the codec the package states per file: the rasters' own, none for the GeoPackage
    assert [file_facts(ctx.output_dir / f).compression for f in out.files] == [None, "ZSTD", "ZSTD"]
    with fiona.open(ctx.output_dir / out.files[0]) as src:
        assert src.crs.to_epsg() == 4326
        assert list(src.schema["properties"]) == ["source"]
        got = {f["properties"]["source"]: shape(f["geometry"]) for f in src}
    assert set(got) == set(expected)
    total_got = sum(g.length for g in got.values())
    total_want = sum(g.length for g in expected.values())
    assert total_got == pytest.approx(total_want, rel=1e-9)  # whole, not clipped
    assert sum(g.intersection(POLYGON).length for g in expected.values()) < total_want


def test_gridfinder_rasters_outside_the_boundary_are_empty_results(tmp_path):
    root = tmp_path / "mirror"
    build_mirror(root, Gridfinder, bounds=(100.0, -40.0, 180.0, 0.0), width=16, height=8)
    write_grid(Path(mirror_url(Gridfinder.grid_url, str(root))), n=5)
    with OriginServer(root) as server:
        ctx, _ = make_context(tmp_path, server.url)
        out = Gridfinder().generate(BOUNDARY, ctx)
    details = {d.name: d for d in out.details}
    assert len(out.files) == 3
    assert details["gridfinder-version_1-targets-testland.tif"].empty and details["gridfinder-version_1-lv-testland.tif"].empty


# --------------------------------------------------------------------------- power plants


def write_powerplants_zip(path: Path, n: int = 200) -> list[dict]:
    rng = random.Random(3)
    rows = []
    for i in range(n):
        row = {c: "" for c in POWERPLANT_COLUMNS}
        row.update(country="TST", country_long="Testland", name=f"Plant {i}", gppd_idnr=f"WRI{i:05d}",
                   capacity_mw=f"{rng.uniform(1, 900):.3f}", latitude=f"{rng.uniform(-60, 70):.4f}",
                   longitude=f"{rng.uniform(-90, 120):.4f}", primary_fuel=rng.choice(["Hydro", "Solar", "Gas"]),
                   commissioning_year=str(rng.randint(1950, 2019)) if i % 3 else "", wepp_id=f"{i}" if i % 2 else "x-1",
                   generation_gwh_2017=f"{rng.uniform(0, 5000):.2f}" if i % 4 else "")
        rows.append(row)
    rows.append({**{c: "" for c in POWERPLANT_COLUMNS}, "name": "no coordinates", "latitude": "", "longitude": ""})
    csv_path = path.parent / "global_power_plant_database.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, POWERPLANT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(csv_path, "global_power_plant_database.csv")
        zf.writestr("A_Global_Database_of_Power_Plants.pdf", b"%PDF-1.4 not really")
    csv_path.unlink()
    return rows[:-1]


def test_wri_powerplants_points_inside_and_cached(tmp_path):
    root = tmp_path / "mirror"
    zip_path = Path(mirror_url(WriPowerplants.source_url, str(root)))
    rows = write_powerplants_zip(zip_path)
    inside = {r["gppd_idnr"] for r in rows
              if shape({"type": "Point", "coordinates": (float(r["longitude"]), float(r["latitude"]))}).intersects(POLYGON)}
    assert 0 < len(inside) < len(rows)

    class Synthetic(WriPowerplants):
        source_sha1 = hashlib.sha1(zip_path.read_bytes()).hexdigest()

    with OriginServer(root) as server:
        for run in ("first", "second"):
            ctx, _ = make_context(tmp_path, server.url, run=run)
            out = Synthetic().generate(BOUNDARY, ctx)
            assert out.files == ["wri_powerplants-version_130-testland.gpkg"]
            with fiona.open(ctx.output_dir / out.files[0]) as src:
                assert src.crs.to_epsg() == 4326
                props = src.schema["properties"]
                assert list(props) == POWERPLANT_COLUMNS  # 36 attributes + the point geometry
                assert props["capacity_mw"].startswith("float") and props["name"].startswith("str")
                assert props["wepp_id"].startswith("str")  # mixed values stay strings
                got = {f["properties"]["gppd_idnr"]: f for f in src}
            assert set(got) == inside
    assert list(server.requests.values()) == [1]  # the zip was fetched once for both runs
    one = next(iter(got.values()))
    want = next(r for r in rows if r["gppd_idnr"] == one["properties"]["gppd_idnr"])
    assert one["properties"]["capacity_mw"] == pytest.approx(float(want["capacity_mw"]))
    assert one["geometry"]["coordinates"] == pytest.approx((float(want["longitude"]), float(want["latitude"])))


def test_wri_powerplants_checks_the_declared_sha1(tmp_path):
    root = tmp_path / "mirror"
    write_powerplants_zip(Path(mirror_url(WriPowerplants.source_url, str(root))), n=5)
    ctx, _ = make_context(tmp_path, str(root))
    assert WriPowerplants.source_sha1 == SOURCE_SHA1
    with pytest.raises(SourceCorrupt, match="sha1"):
        WriPowerplants().generate(BOUNDARY, ctx)
