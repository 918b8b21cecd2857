"""Boundary store: validation, name and point search, custom uploads, file loading, threads."""
from __future__ import annotations

import json
import math
import shutil
import threading
from pathlib import Path

import pytest
from shapely.geometry import LineString, MultiPolygon, Polygon, box, shape

from backend.boundaries import BoundaryStore, LoadReport, open_store, slugify
from backend.errors import BoundaryExists, BoundaryNotFound, InvalidBoundary, InvalidRequest, PayloadTooLarge
from backend.settings import Settings



@pytest.fixture
def fresh_store(tmp_path: Path) -> BoundaryStore:
    store = BoundaryStore(tmp_path / "boundaries.db")
    yield store
    store.close()


@pytest.fixture(scope="session")
def world_store(tmp_path_factory: pytest.TempPathFactory, seeded_boundaries_db: Path) -> BoundaryStore:
    """Natural Earth admin-0 and admin-1: a copy of the session's seeded database (conftest)."""
    path = tmp_path_factory.mktemp("world") / "boundaries.db"
    shutil.copy(seeded_boundaries_db, path)
    store = BoundaryStore(path)
    yield store
    store.close()


def square(x: float, y: float, size: float = 1.0) -> dict:
    return {"type": "Polygon", "coordinates": [[[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]]}


def names(rows: list[dict]) -> list[str]:
    return [row["name"] for row in rows]


# -- slugs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, slug", [
    ("Kenya", "kenya"),
    ("Côte d'Ivoire", "cote_d_ivoire"),
    ("  São Tomé & Príncipe ", "sao_tome_principe"),
    ("Dem. Rep. Congo", "dem_rep_congo"),
    ("Schleswig-Holstein", "schleswig_holstein"),
    ("Straße", "strasse"),
    ("北京", ""),
])
def test_slugify_folds_to_lowercase_ascii_with_underscores(text: str, slug: str) -> None:
    assert slugify(text) == slug


def test_slugify_caps_length_at_128() -> None:
    assert len(slugify("a" * 300)) == 128


# -- add and get --------------------------------------------------------------------------------

def test_add_then_get_returns_multipolygon_and_envelope(fresh_store: BoundaryStore) -> None:
    geometry = MultiPolygon([Polygon([(0, 0), (2, 0), (2, 1), (0, 1)]), Polygon([(3, 3), (4, 3), (4, 5), (3, 5)])])
    added = fresh_store.add(name="two_parts", name_long="Two parts", admin_level=0, geometry=geometry)
    got = fresh_store.get("two_parts")
    assert added == got
    assert got["name"] == "two_parts" and got["name_long"] == "Two parts" and got["admin_level"] == 0
    assert got["geometry"]["type"] == "MultiPolygon"
    assert shape(got["geometry"]).equals(geometry)
    assert got["envelope"]["type"] == "Polygon"
    assert shape(got["envelope"]).equals(box(0, 0, 4, 5))
    assert json.loads(json.dumps(got)) == got
    assert fresh_store.count() == 1
    assert fresh_store.list() == [{"id": got["id"], "name": "two_parts", "name_long": "Two parts"}]


def test_polygon_is_promoted_to_multipolygon(fresh_store: BoundaryStore) -> None:
    got = fresh_store.add(name="sq", name_long="Square", admin_level=1, geometry=square(10, 10))
    assert got["geometry"]["type"] == "MultiPolygon"
    assert len(got["geometry"]["coordinates"]) == 1


def test_invalid_bowtie_is_repaired(fresh_store: BoundaryStore) -> None:
    bowtie = Polygon([(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)])
    assert not bowtie.is_valid
    got = fresh_store.add(name="bowtie", name_long="Bowtie", admin_level=0, geometry=bowtie)
    repaired = shape(got["geometry"])
    assert repaired.is_valid
    assert repaired.area == pytest.approx(2.0)
    assert names(fresh_store.search_point(1.0, 0.5)) == ["bowtie"]  # inside the left triangle


def test_get_unknown_name_raises_not_found(fresh_store: BoundaryStore) -> None:
    with pytest.raises(BoundaryNotFound, match="nowhere"):
        fresh_store.get("nowhere")


def test_add_existing_name_conflicts_unless_replace(fresh_store: BoundaryStore) -> None:
    fresh_store.add(name="area", name_long="Area", admin_level=0, geometry=square(0, 0))
    with pytest.raises(BoundaryExists):
        fresh_store.add(name="area", name_long="Area", admin_level=0, geometry=square(5, 5))
    fresh_store.add(name="area", name_long="Moved", admin_level=0, geometry=square(5, 5), replace=True)
    assert fresh_store.search_point(0.5, 0.5) == []
    assert names(fresh_store.search_point(5.5, 5.5)) == ["area"]
    assert fresh_store.count() == 1


@pytest.mark.parametrize("name", ["Kenya", "", "_x", "a/b", "a" * 129, "ké"])
def test_add_rejects_unsafe_names(fresh_store: BoundaryStore, name: str) -> None:
    with pytest.raises(InvalidBoundary, match="invalid boundary name"):
        fresh_store.add(name=name, name_long="x", admin_level=0, geometry=square(0, 0))


# -- rejected geometries ------------------------------------------------------------------------

@pytest.mark.parametrize("payload, exception, message", [
    (b"{not json", InvalidBoundary, "malformed JSON"),
    (b"[1, 2]", InvalidBoundary, "not GeoJSON"),
    (b'{"hello": "world"}', InvalidBoundary, "not GeoJSON"),
    (b'{"type": "Polygon", "coordinates": []}', InvalidBoundary, "empty"),
    (b'{"type": "FeatureCollection", "features": []}', InvalidBoundary, "empty"),
    (b'{"type": "Feature", "properties": {}, "geometry": null}', InvalidBoundary, "empty"),
    (json.dumps({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}).encode(), InvalidBoundary, "LineString"),
    (json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": square(0, 0)},
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [0, 0]}}]}).encode(),
     InvalidBoundary, r"features\[1\] geometry is a Point"),
    (json.dumps({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}).encode(), InvalidBoundary, "malformed coordinates"),
    (json.dumps(square(3_000_000, 1_000_000, 1000)).encode(), InvalidBoundary, "outside EPSG:4326 range.*is the CRS right"),
    (json.dumps({**square(0, 0), "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}}}).encode(),
     InvalidBoundary, "EPSG::3857.*only EPSG:4326"),
])
def test_add_geojson_rejects_bad_payloads_with_clear_message(
        fresh_store: BoundaryStore, payload: bytes, exception: type, message: str) -> None:
    with pytest.raises(exception, match=message):
        fresh_store.add_geojson(payload)
    assert fresh_store.count() == 0


def test_add_rejects_non_polygon_and_empty_shapely_geometries(fresh_store: BoundaryStore) -> None:
    with pytest.raises(InvalidBoundary, match="LineString"):
        fresh_store.add(name="line", name_long="Line", admin_level=0, geometry=LineString([(0, 0), (1, 1)]))
    with pytest.raises(InvalidBoundary, match="empty"):
        fresh_store.add(name="empty", name_long="Empty", admin_level=0, geometry=Polygon())


@pytest.mark.parametrize("crs_name", ["EPSG:4326", "urn:ogc:def:crs:OGC:1.3:CRS84", "urn:ogc:def:crs:EPSG::4326"])
def test_add_geojson_accepts_wgs84_crs_members(fresh_store: BoundaryStore, crs_name: str) -> None:
    payload = {"type": "Feature", "properties": {}, "geometry": square(0, 0),
               "crs": {"type": "name", "properties": {"name": crs_name}}}
    _, created = fresh_store.add_geojson(payload)
    assert created


def test_add_geojson_rejects_too_many_vertices(fresh_store: BoundaryStore) -> None:
    ring = [[math.cos(a / 100), math.sin(a / 100)] for a in range(629)] + [[1, 0]]
    payload = json.dumps({"type": "Polygon", "coordinates": [ring]}).encode()
    with pytest.raises(PayloadTooLarge, match="630 vertices; at most 500"):
        fresh_store.add_geojson(payload, max_vertices=500)
    assert fresh_store.add_geojson(payload, max_vertices=1000)[1]


def test_add_geojson_rejects_too_many_bytes(tmp_path: Path) -> None:
    store = BoundaryStore(tmp_path / "b.db", max_bytes=100)
    payload = json.dumps(square(0, 0, 0.123456789)).encode()
    with pytest.raises(PayloadTooLarge, match=f"{len(payload)} bytes; at most 100 bytes"):
        store.add_geojson(payload)
    store.close()


# -- custom uploads -----------------------------------------------------------------------------

def test_same_custom_polygon_uploaded_twice_gives_same_boundary(fresh_store: BoundaryStore) -> None:
    first, created = fresh_store.add_geojson(json.dumps(square(30, -5, 0.5)).encode())
    assert created
    assert first.name.startswith("custom_") and len(first.name) == len("custom_") + 12
    stored = fresh_store.get(first.name)
    assert first.as_dict() == {**stored, "admin_level": str(stored["admin_level"])}  # the API's string
    # Same polygon, other ring start and orientation, as a Feature.
    ring = [[30.5, -5], [30, -5], [30, -4.5], [30.5, -4.5], [30.5, -5]]
    again, created = fresh_store.add_geojson(
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}})
    assert not created
    assert again == first
    assert fresh_store.count() == 1


def test_custom_name_reused_for_other_geometry_conflicts(fresh_store: BoundaryStore) -> None:
    got, created = fresh_store.add_geojson(square(0, 0), name="my_area", name_long="My area")
    assert created and got.name == "my_area" and got.name_long == "My area"
    assert fresh_store.add_geojson(square(0, 0), name="my_area")[1] is False
    with pytest.raises(BoundaryExists, match="my_area"):
        fresh_store.add_geojson(square(1, 1), name="my_area")


def test_feature_collection_is_dissolved(fresh_store: BoundaryStore) -> None:
    collection = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": square(0, 0)},
        {"type": "Feature", "properties": {}, "geometry": square(1, 0)},
        {"type": "Feature", "properties": {}, "geometry": {
            "type": "MultiPolygon", "coordinates": [square(5, 5)["coordinates"]]}},
    ]}
    got, _ = fresh_store.add_geojson(json.dumps(collection))
    merged = shape(got.as_dict()["geometry"])
    assert len(merged.geoms) == 2
    assert merged.area == pytest.approx(3.0)


# -- name search --------------------------------------------------------------------------------

def test_name_search_orders_exact_then_prefix_then_substring(fresh_store: BoundaryStore) -> None:
    for name, long, level in [("new_kenyaland", "New Kenyaland", 0), ("kenyan_coast", "Kenyan Coast", 1),
                              ("kenya_nairobi", "Nairobi, Kenya", 1), ("kenya", "Kenya", 0),
                              ("uganda", "Uganda", 0)]:
        fresh_store.add(name=name, name_long=long, admin_level=level, geometry=square(0, 0))
    assert names(fresh_store.search_name("KENYA")) == ["kenya", "kenya_nairobi", "kenyan_coast", "new_kenyaland"]
    assert names(fresh_store.search_name("nairobi")) == ["kenya_nairobi"]
    assert fresh_store.search_name("atlantis") == []
    assert set(fresh_store.search_name("uGaNdA")[0]) == {"id", "name", "name_long"}


def test_name_search_ignores_accents(fresh_store: BoundaryStore) -> None:
    fresh_store.add(name="cote_d_ivoire", name_long="Côte d'Ivoire", admin_level=0, geometry=square(0, 0))
    for text in ("côte", "COTE D'IV", "ÔTE", "cote_d"):
        assert names(fresh_store.search_name(text)) == ["cote_d_ivoire"], text


def test_name_search_sees_boundaries_written_after_it_ran(fresh_store: BoundaryStore, tmp_path: Path) -> None:
    """Searches run on an in-memory index: a write by this store, by another connection (another
    store on the same file, as another process would be) or a replacement shows at once."""
    assert fresh_store.search_name("land") == []
    fresh_store.add(name="upland", name_long="Upland", admin_level=1, geometry=square(0, 0))
    assert names(fresh_store.search_name("land")) == ["upland"]
    other = BoundaryStore(fresh_store.path)
    other.add(name="lowland", name_long="Lowland", admin_level=0, geometry=square(2, 0))
    writer = threading.Thread(target=other.add, kwargs=dict(name="midland", name_long="Midland", admin_level=0, geometry=square(4, 0)))
    writer.start()
    writer.join()
    assert names(fresh_store.search_name("land")) == ["lowland", "midland", "upland"]
    other.add(name="lowland", name_long="Low Country", admin_level=0, geometry=square(2, 0), replace=True)
    other.close()
    assert names(fresh_store.search_name("low country")) == ["lowland"]
    assert names(fresh_store.list()) == ["lowland", "midland", "upland"]


# The table scan name search was before the in-memory index: the index must give the same answers.
_SCAN = """
    SELECT id, name, name_long FROM boundaries
    WHERE instr(search_name, :q) OR instr(search_name_long, :q) OR instr(name, :slug)
    ORDER BY CASE
        WHEN search_name = :q OR search_name_long = :q OR name = :slug THEN 0
        WHEN substr(search_name, 1, length(:q)) = :q OR substr(search_name_long, 1, length(:q)) = :q
          OR substr(name, 1, length(:slug)) = :slug THEN 1
        ELSE 2 END, admin_level, name
"""


@pytest.mark.parametrize("text", ["a", "K", "ken", "Kenya", "north", "São", "sao paulo", "rio", "ile-de",
                                  "Côte d'Ivoire", "kenya_", "_", "ü", "new south wales", "zzz", "Nairobi, Kenya"])
def test_name_search_answers_as_a_scan_of_the_table(world_store: BoundaryStore, text: str) -> None:
    from backend.boundaries import _fold

    query = _fold(text)
    expected = [{"id": r[0], "name": r[1], "name_long": r[2]}
                for r in world_store._conn().execute(_SCAN, {"q": query, "slug": slugify(text) or query})]
    assert world_store.search_name(text) == expected


def test_name_search_rejects_empty_text(fresh_store: BoundaryStore) -> None:
    with pytest.raises(InvalidRequest):
        fresh_store.search_name("  ")


# -- point search -------------------------------------------------------------------------------

@pytest.mark.parametrize("lat, lon", [(91, 0), (-90.5, 0), (0, 180.1), (0, -200), (float("nan"), 0)])
def test_point_search_rejects_out_of_range_coordinates(fresh_store: BoundaryStore, lat: float, lon: float) -> None:
    with pytest.raises(InvalidRequest, match="outside"):
        fresh_store.search_point(lat, lon)


def test_point_on_edge_or_seam_counts(fresh_store: BoundaryStore) -> None:
    fresh_store.add(name="west", name_long="West", admin_level=0, geometry=square(0, 0))
    fresh_store.add(name="east", name_long="East", admin_level=0, geometry=square(1, 0))
    assert names(fresh_store.search_point(0.5, 1.0)) == ["east", "west"]
    assert names(fresh_store.search_point(0.5, 0.0)) == ["west"]
    assert fresh_store.search_point(0.5, 2.5) == []


def test_point_search_works_on_boundaries_split_into_many_parts(tmp_path: Path) -> None:
    store = BoundaryStore(tmp_path / "b.db", part_max_vertices=16)
    ring = [(20 * math.cos(a / 200 * math.tau), 20 * math.sin(a / 200 * math.tau)) for a in range(200)]
    hole = [(5 * math.cos(a / 50 * math.tau), 5 * math.sin(a / 50 * math.tau)) for a in range(50)]
    store.add(name="ring", name_long="Ring", admin_level=0, geometry=Polygon(ring, [hole]))
    parts = store._conn().execute("SELECT count(*) FROM boundary_parts").fetchone()[0]
    assert parts > 10
    assert names(store.search_point(0, 12)) == ["ring"]
    assert names(store.search_point(-15, -3)) == ["ring"]
    assert store.search_point(0, 0) == []  # in the hole
    assert store.search_point(0, 25) == []
    store.close()


def test_seeded_point_search_finds_country_and_province(world_store: BoundaryStore) -> None:
    assert names(world_store.search_point(-1.29, 36.82)) == ["kenya", "kenya_nairobi"]
    gambia = names(world_store.search_point(13.45, -15.5))
    assert gambia[0] == "gambia" and len(gambia) == 2 and gambia[1].startswith("gambia_")


def test_seeded_point_search_in_ocean_is_empty(world_store: BoundaryStore) -> None:
    assert world_store.search_point(0.0, -30.0) == []
    assert world_store.search_point(-40.0, -120.0) == []


def test_seed_loads_countries_and_provinces_with_slugs(world_store: BoundaryStore) -> None:
    assert world_store.count() > 4500
    kenya = world_store.get("kenya")
    assert kenya["admin_level"] == 0 and kenya["name_long"] == "Kenya"
    nairobi = world_store.get("kenya_nairobi")
    assert nairobi["admin_level"] == 1 and nairobi["name_long"] == "Nairobi, Kenya"
    assert names(world_store.search_name("Kenya"))[0] == "kenya"
    assert "gambia" in names(world_store.list())


def test_point_search_is_thread_safe(world_store: BoundaryStore) -> None:
    points = [(-1.29, 36.82), (0.0, -30.0), (13.45, -15.5), (48.85, 2.35), (-33.9, 18.4), (35.7, 139.7)]
    expected = [world_store.search_point(*p) for p in points]
    errors: list[BaseException] = []
    results: list[bool] = []

    def worker() -> None:
        try:
            for _ in range(30):
                results.append([world_store.search_point(*p) for p in points] == expected)
                world_store.search_name("ken")
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 240 and all(results)


def test_concurrent_custom_uploads_of_same_polygon_create_one_boundary(fresh_store: BoundaryStore) -> None:
    outcomes: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            got, created = fresh_store.add_geojson(square(7, 7))
            outcomes.append((got.name, created))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=upload) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({name for name, _ in outcomes}) == 1
    assert sum(created for _, created in outcomes) == 1
    assert fresh_store.count() == 1


# -- loading files ------------------------------------------------------------------------------

def to_web_mercator(lon: float, lat: float) -> tuple[float, float]:
    r = 6378137.0
    return r * math.radians(lon), r * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


def write_layer(path: Path, driver: str, crs: str, features: list[tuple[dict, dict | None]],
                properties: dict[str, str]) -> None:
    import fiona

    schema = {"geometry": "Unknown" if driver == "GeoJSON" else "Polygon", "properties": properties}
    with fiona.open(path, "w", driver=driver, crs=crs, schema=schema) as dst:
        for props, geometry in features:
            dst.write({"type": "Feature", "properties": props, "geometry": geometry})


def test_load_file_reprojects_web_mercator_geojson(fresh_store: BoundaryStore, tmp_path: Path) -> None:
    def mercator_square(lon: float, lat: float, size: float) -> dict:
        corners = [(lon, lat), (lon + size, lat), (lon + size, lat + size), (lon, lat + size), (lon, lat)]
        return {"type": "Polygon", "coordinates": [[list(to_web_mercator(*c)) for c in corners]]}

    bowtie = [(36, 1), (37, 2), (37, 1), (36, 2), (36, 1)]
    features = [
        ({"NAME": "Nairobi Area", "LONG": "Nairobi metropolitan area"}, mercator_square(36.6, -1.5, 0.5)),
        ({"NAME": "Nairobi Area", "LONG": "Second"}, mercator_square(30, 10, 1)),
        ({"NAME": "", "LONG": "No name"}, mercator_square(0, 0, 1)),
        ({"NAME": "Bowtie", "LONG": "Bowtie"},
         {"type": "Polygon", "coordinates": [[list(to_web_mercator(*c)) for c in bowtie]]}),
        ({"NAME": "Road", "LONG": "A line"},
         {"type": "LineString", "coordinates": [list(to_web_mercator(0, 0)), list(to_web_mercator(1, 1))]}),
    ]
    path = tmp_path / "areas.geojson"
    write_layer(path, "GeoJSON", "EPSG:3857", features, {"NAME": "str", "LONG": "str"})

    report = fresh_store.load_file(path, name_column="NAME", long_name_column="LONG", admin_level=2)
    assert isinstance(report, LoadReport)
    assert (report.loaded, report.skipped) == (3, 2)
    assert any("feature 2" in m and "empty name" in m for m in report.messages)
    assert any("feature 3" in m and "repaired" in m for m in report.messages)
    assert any("feature 4" in m and "LineString" in m for m in report.messages)
    area = fresh_store.get("nairobi_area")
    assert area["name_long"] == "Nairobi metropolitan area" and area["admin_level"] == 2
    minx, miny, maxx, maxy = shape(area["geometry"]).bounds
    assert (minx, miny, maxx, maxy) == pytest.approx((36.6, -1.5, 37.1, -1.0), abs=1e-6)
    assert fresh_store.get("nairobi_area_2")["name_long"] == "Second"
    assert names(fresh_store.search_point(-1.29, 36.82)) == ["nairobi_area"]


def test_load_file_reads_shapefile_with_name_prefix(fresh_store: BoundaryStore, tmp_path: Path) -> None:
    path = tmp_path / "regions.shp"
    write_layer(path, "ESRI Shapefile", "EPSG:4326", [
        ({"name": "Nord", "country": "Fantasia"}, square(0, 0)),
        ({"name": "Süd", "country": "Fantasia"}, square(0, -1)),
    ], {"name": "str", "country": "str"})
    report = fresh_store.load_file(path, name_column="name", long_name_column=None, admin_level=1,
                                   name_prefix_column="country")
    assert (report.loaded, report.skipped) == (2, 0)
    assert names(fresh_store.list()) == ["fantasia_nord", "fantasia_sud"]
    assert fresh_store.get("fantasia_sud")["name_long"] == "Süd"


def test_load_file_names_available_columns_and_layers(fresh_store: BoundaryStore, tmp_path: Path) -> None:
    path = tmp_path / "regions.geojson"
    write_layer(path, "GeoJSON", "EPSG:4326", [({"title": "A", "code": "1"}, square(0, 0))],
                {"title": "str", "code": "str"})
    with pytest.raises(InvalidBoundary, match="column 'NAME' not found.*available columns: title, code"):
        fresh_store.load_file(path, name_column="NAME")
    with pytest.raises(InvalidBoundary, match="layer 'countries' not found.*available layers: regions"):
        fresh_store.load_file(path, layer="countries", name_column="title")
    assert fresh_store.count() == 0


def test_open_store_uses_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, max_upload_vertices=10, max_upload_bytes=1234)
    store = open_store(settings)
    assert store.path == tmp_path / "boundaries.db" and store.path.exists()
    assert (store.max_vertices, store.max_bytes) == (10, 1234)
    store.close()
