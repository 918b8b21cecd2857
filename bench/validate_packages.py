"""Build real packages from a source mirror and run the standard validators on every file.

    python bench/validate_packages.py --mirror DATA_DIR/sample-sources --out /tmp/validate \
        [--boundaries kenya,france,fiji] [--processors storm.global_mosaics_version_1,...]
        [--rio-cogeo-python /path/to/python-with-rio-cogeo]

Each boundary (a Natural Earth country from QGIS's world_map.gpkg, plus `ocean`: a box in the
South Atlantic with no data of any dataset) gets a package written by the backend's own package
store from every processor's real `generate()`. Then:

* `frictionless validate` on every datapackage.json (which checks every file's bytes and hash);
* GDAL's COG validator (`osgeo_utils.samples.validate_cloud_optimized_geotiff`, full check) on
  every GeoTIFF, and rio-cogeo's `cog_validate` when a Python with rio-cogeo is given (it is not
  part of the Debian stack this project runs on, so it runs in that other interpreter);
* GDAL's GeoPackage validator (`osgeo_utils.samples.validate_gpkg`) on every GeoPackage;
* the CRS declared in `files[]` against the CRS rasterio / fiona read from the file;
* the SYNTHETIC marker of every file against the resource's `synthetic`.

Prints one table row per check: files checked, passed, and the first failures.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shapely.geometry import box, mapping  # noqa: E402

from backend.packages import PackageStore  # noqa: E402
from processors.base import DEFAULT_WORLD_MAP_GPKG, Boundary, ProcessorContext  # noqa: E402
from processors.registry import ProcessorRegistry  # noqa: E402

OCEAN = box(-30.0, -35.0, -25.0, -30.0)


def country(name: str) -> Boundary:
    import fiona
    from shapely.geometry import MultiPolygon, shape

    with fiona.open(DEFAULT_WORLD_MAP_GPKG, layer="countries") as src:
        for f in src:
            if (f.properties["NAME"] or "").lower() == name.lower():
                geom = shape(f.geometry)
                geom = geom if isinstance(geom, MultiPolygon) else MultiPolygon([geom])
                return Boundary(name=name.lower().replace(" ", "_"), name_long=f.properties["NAME"],
                                geometry=mapping(geom), envelope=mapping(box(*geom.bounds)))
    raise SystemExit(f"no country {name!r} in {DEFAULT_WORLD_MAP_GPKG}")


def build(mirror: Path, out: Path, boundaries: list[Boundary], names: list[str]) -> PackageStore:
    registry = ProcessorRegistry.discover()
    store = PackageStore(out / "packages")
    for boundary in boundaries:
        record = {"name": boundary.name, "name_long": boundary.name_long}
        store.ensure_package(record)
        for name in names:
            cls = registry.get(name)
            work = out / "work" / boundary.name / name
            for sub in ("out", "tmp"):
                (work / sub).mkdir(parents=True, exist_ok=True)
            ctx = ProcessorContext(output_dir=work / "out", processing_dir=work / "tmp",
                                   source_dir=out / "sources" / cls.name / cls.version, source_mirror=str(mirror))
            started = time.monotonic()
            output = cls().generate(boundary, ctx)
            store.install_dataset(record, cls, output, work / "out")
            print(f"{boundary.name} {name}: {len(output.files)} files in {time.monotonic() - started:.1f} s", flush=True)
    return store


def validate(store: PackageStore, rio_cogeo_python: str | None) -> list[tuple[str, int, int, list[str]]]:
    import fiona
    import rasterio
    from frictionless import validate as frictionless_validate
    from osgeo import gdal
    from osgeo_utils.samples import validate_cloud_optimized_geotiff as cog, validate_gpkg

    rows: dict[str, list] = {k: [0, 0, []] for k in (
        "frictionless validate (datapackage.json, every file's bytes + hash)", "GDAL COG validator (full check)",
        "rio-cogeo cog_validate", "GDAL GeoPackage validator (validate_gpkg)", "files[].crs == CRS read from the file",
        "SYNTHETIC marker == resource synthetic")}
    keys = list(rows)

    def tally(key: str, ok: bool, what: str) -> None:
        rows[key][0] += 1
        rows[key][1] += ok
        if not ok and len(rows[key][2]) < 5:
            rows[key][2].append(what)

    tifs = []
    for folder in sorted(p for p in store.root.iterdir() if p.is_dir()):
        report = frictionless_validate(str(folder / "datapackage.json"))
        tally(keys[0], report.valid, f"{folder.name}: {report.flatten(['type', 'note'])[:2]}")
        for resource in json.loads((folder / "datapackage.json").read_text())["resources"]:
            for entry in resource["files"]:
                path = folder / entry["path"]
                if path.suffix == ".tif":
                    tifs.append(path)
                    ds = gdal.Open(str(path))
                    _, errors, _ = cog.validate(ds, full_check=True)
                    tally(keys[1], not errors, f"{path.name}: {errors}")
                    synthetic = bool(ds.GetMetadataItem("SYNTHETIC"))
                    ds = None
                    with rasterio.open(path) as r:
                        crs = r.crs.to_string()
                else:
                    try:
                        validate_gpkg.check(str(path), warning_msg=False)
                        tally(keys[3], True, "")
                    except Exception as exc:  # GPKGCheckException and friends
                        tally(keys[3], False, f"{path.name}: {exc}")
                    ds = gdal.OpenEx(str(path))
                    synthetic = bool(ds.GetMetadataItem("SYNTHETIC"))
                    ds = None
                    with fiona.open(path) as f:
                        crs = f.crs.to_string()
                tally(keys[4], entry["crs"] == crs, f"{path.name}: declared {entry['crs']}, file {crs}")
                tally(keys[5], synthetic == resource["synthetic"], f"{path.name}: tag {synthetic}")
    if rio_cogeo_python:
        script = ("import sys\nfrom rio_cogeo.cogeo import cog_validate\nfor p in sys.stdin.read().split('\\n'):\n"
                  "    ok, errors, _ = cog_validate(p, quiet=True)\n    print(int(ok), p, errors)\n")
        done = subprocess.run([rio_cogeo_python, "-c", script], input="\n".join(map(str, tifs)), capture_output=True,
                              text=True, check=True)
        for line in done.stdout.splitlines():
            ok, path, errors = line.split(" ", 2)
            tally(keys[2], ok == "1", f"{Path(path).name}: {errors}")
    return [(k, *rows[k]) for k in keys]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--boundaries", default="kenya,france,fiji")
    parser.add_argument("--processors", default="")
    parser.add_argument("--rio-cogeo-python", default=None)
    args = parser.parse_args()
    names = [n for n in args.processors.split(",") if n] or ProcessorRegistry.discover().names()
    boundaries = [country(n) for n in args.boundaries.split(",")]
    boundaries.append(Boundary(name="ocean", name_long="South Atlantic (no data)", geometry=mapping(OCEAN),
                               envelope=mapping(OCEAN)))
    store = build(args.mirror, args.out, boundaries, names)
    print("\n| check | files checked | passed | first failures |\n|---|---|---|---|")
    for name, checked, passed, failures in validate(store, args.rio_cogeo_python):
        print(f"| {name} | {checked} | {passed} | {'; '.join(failures)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
