"""PackageStore against a real folder: safe paths, atomic installs, serialised updates, HTML pages."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from backend.errors import UnsafePath
from backend.packages import PackageStore, resource_name
from processors.base import Boundary, DataLicense, Processor, ProcessorContext, ProcessorMetadata, ProcessorOutput
from processors.builtin.test_processors import TestProcessor as Nightlights  # alias: pytest collects "Test*" names

ROOT = Path(__file__).resolve().parent.parent
GAMBIA = {"name": "gambia", "name_long": "Gambia"}
XSS = "<script>alert(1)</script>"
CC0 = DataLicense(name="CC0-1.0", path="https://creativecommons.org/publicdomain/zero/1.0/", title="CC0 1.0")


def make_processor(dataset: str, version: str = "version_1", *, title: str = "", citation: str = "",
                   payload: bytes = b"data") -> type[Processor]:
    """A tiny processor writing one file with `payload` (importable by the subprocesses below)."""

    class Tiny(Processor):
        name = dataset
        metadata = ProcessorMetadata(
            description=f"{dataset} for tests", dataset=dataset, author="Test Author", license=CC0,
            origin_url="https://example.org/source", formats=("CSV",), title=title, citation=citation,
        )

        def generate(self, boundary: Boundary, context: ProcessorContext) -> ProcessorOutput:
            filename = self.output_filename(boundary, "csv")
            (context.output_dir / filename).write_bytes(payload)
            return ProcessorOutput(files=[filename], format="CSV", description=self.metadata.description)

    Tiny.version = version
    Tiny.__name__ = Tiny.__qualname__ = f"Tiny_{dataset}"
    return Tiny


def run_processor(processor: type[Processor], work: Path, boundary: dict = GAMBIA) -> tuple[ProcessorOutput, Path]:
    """Run a processor into a fresh output folder, as a worker would."""
    output_dir = work / f"out-{processor.name}-{time.monotonic_ns()}"
    for folder in ("", "processing", "source"):
        (output_dir / folder).mkdir(parents=True, exist_ok=True)
    out = output_dir / "out"
    out.mkdir()
    b = Boundary(name=boundary["name"], name_long=boundary["name_long"], geometry={}, envelope={})
    ctx = ProcessorContext(output_dir=out, processing_dir=output_dir / "processing", source_dir=output_dir / "source",
                           test_processor_seconds=0)
    return processor().generate(b, ctx), out


def install(store: PackageStore, processor: type[Processor], work: Path, boundary: dict = GAMBIA) -> dict:
    output, out = run_processor(processor, work, boundary)
    return store.install_dataset(boundary, processor, output, out)


@pytest.fixture
def store(tmp_path) -> PackageStore:
    return PackageStore(tmp_path / "packages")


@pytest.fixture
def work(tmp_path) -> Path:
    path = tmp_path / "processing"
    path.mkdir()
    return path


# -- paths -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["..", "../x", "a/b", "", "A", ".hidden", "x" * 200, "x\x00", "gambia\n", "/etc", "."])
def test_package_dir_refuses_names_that_are_not_slugs(store, name):
    with pytest.raises(UnsafePath):
        store.package_dir(name)


def test_package_dir_accepts_slugs_directly_under_the_root(store):
    assert store.package_dir("kenya_nairobi") == store.root / "kenya_nairobi"
    assert store.package_dir("x" * 128).parent == store.root


@pytest.mark.parametrize("relative", ["../x", "gambia/../../etc/passwd", "/etc/passwd", "gambia/../../packages2/x", "gambia/x\x00y",
                                      "gambia/../kenya/index.html", "gambia/" + "x" * 256, "gambia/" + "x/" * 2100])
def test_resolve_file_refuses_paths_leaving_the_root(store, relative):
    with pytest.raises(UnsafePath):
        store.resolve_file(relative)


def test_resolve_file_keeps_paths_inside_the_root(store):
    assert store.resolve_file("gambia/datapackage.json") == store.root / "gambia" / "datapackage.json"


# -- installing ------------------------------------------------------------------------------------

def test_install_moves_outputs_into_the_package_and_records_hash_and_size(store, work):
    output, out = run_processor(Nightlights, work)
    (produced,) = out.iterdir()
    expected_hash = hashlib.sha256(produced.read_bytes()).hexdigest()

    resource = store.install_dataset(GAMBIA, Nightlights, output, out)

    dataset = store.root / "gambia" / "datasets" / "test_processor" / "version_1"
    data_file = dataset / "data" / "test_processor-version_1-gambia.tif"
    assert data_file.read_text() == "test"
    assert list(out.iterdir()) == []
    assert resource["path"] == ["datasets/test_processor/version_1/data/test_processor-version_1-gambia.tif"]
    assert resource["hashes"] == [expected_hash] and resource["hash_algorithm"] == "sha256"
    assert resource["bytes"] == 4
    assert (dataset / "index.html").is_file() and (dataset / "license.html").is_file()
    for page in ("index.html", "license.html", "version.html"):
        assert (store.root / "gambia" / page).is_file()
    package = store.read_datapackage("gambia")
    assert package["resources"] == [resource]
    assert package["licenses"] == [{"name": "CC-BY-4.0", "path": "https://creativecommons.org/licenses/by/4.0/",
                                    "title": "Creative Commons Attribution 4.0"}]
    assert store.has_dataset("gambia", Nightlights)


def test_install_records_total_bytes_and_hash_of_every_file(store, work):
    class TwoFiles(Processor):
        name, version = "two_files", "version_1"
        metadata = make_processor("two_files").metadata

    out = work / "out"
    out.mkdir()
    (out / "a.csv").write_bytes(b"x" * 10)
    (out / "b.csv").write_bytes(b"y" * 5)
    resource = store.install_dataset(GAMBIA, TwoFiles, ProcessorOutput(files=["a.csv", "b.csv"], format="CSV"), out)
    assert resource["bytes"] == 15
    assert resource["hashes"] == [hashlib.sha256(b"x" * 10).hexdigest(), hashlib.sha256(b"y" * 5).hexdigest()]
    assert [p.rsplit("/", 1)[-1] for p in resource["path"]] == ["a.csv", "b.csv"]


def test_reinstall_replaces_the_resource_and_leaves_no_staging_or_trash(store, work):
    first = install(store, make_processor("roads", payload=b"old"), work)
    second = install(store, make_processor("roads", payload=b"new contents"), work)

    package = store.read_datapackage("gambia")
    assert [r["name"] for r in package["resources"]] == ["roads-version_1"]
    assert package["resources"][0]["hashes"] == [hashlib.sha256(b"new contents").hexdigest()] == second["hashes"]
    assert second["hashes"] != first["hashes"]
    data = store.root / "gambia" / "datasets" / "roads" / "version_1" / "data" / "roads-version_1-gambia.csv"
    assert data.read_bytes() == b"new contents"
    leftovers = [p for p in (store.root / "gambia").rglob("*") if p.name.startswith((".staging-", ".trash-")) or p.name.endswith(".tmp")]
    assert leftovers == []


def test_two_versions_of_a_dataset_are_two_resources(store, work):
    install(store, make_processor("roads", "version_1"), work)
    install(store, make_processor("roads", "version_2"), work)
    assert [r["name"] for r in store.read_datapackage("gambia")["resources"]] == ["roads-version_1", "roads-version_2"]


@pytest.mark.parametrize("bad_name", ["../outside.csv", "/etc/hostname", "missing.csv", "sub/inner.csv", "link.csv", "."])
def test_output_outside_the_output_folder_is_refused_and_package_unchanged(store, work, bad_name):
    install(store, Nightlights, work)
    before = (store.root / "gambia" / "datapackage.json").read_bytes()
    out = work / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "inner.csv").write_text("inner")
    (out / "link.csv").symlink_to(out / "sub" / "inner.csv")  # a link, even to a file of the folder
    (work / "outside.csv").write_text("outside")
    roads = make_processor("roads")

    with pytest.raises(ValueError, match="not a file in its output folder"):
        store.install_dataset(GAMBIA, roads, ProcessorOutput(files=[bad_name], format="CSV"), out)

    assert (store.root / "gambia" / "datapackage.json").read_bytes() == before
    assert not (store.root / "gambia" / "datasets" / "roads" / "version_1").exists()
    assert list((store.root / "gambia" / "datasets" / "roads").iterdir()) == []  # no staging left
    assert (work / "outside.csv").read_text() == "outside"
    assert not store.has_dataset("gambia", roads)


def test_output_symlink_pointing_outside_is_refused(store, work):
    out = work / "out"
    out.mkdir()
    (work / "secret.txt").write_text("secret")
    (out / "link.csv").symlink_to(work / "secret.txt")
    with pytest.raises(ValueError):
        store.install_dataset(GAMBIA, make_processor("roads"), ProcessorOutput(files=["link.csv"], format="CSV"), out)
    assert (work / "secret.txt").read_text() == "secret"
    assert store.read_datapackage("gambia") is None


def test_has_dataset_is_false_when_a_recorded_file_was_deleted(store, work):
    resource = install(store, Nightlights, work)
    assert store.has_dataset("gambia", Nightlights)
    (store.root / "gambia" / resource["path"][0]).unlink()
    assert not store.has_dataset("gambia", Nightlights)


def test_has_dataset_is_false_without_package_or_resource(store, work):
    assert not store.has_dataset("gambia", Nightlights)
    install(store, make_processor("roads"), work)
    assert not store.has_dataset("gambia", Nightlights)


def test_installed_package_validates_as_a_frictionless_data_package(store, work):
    from frictionless import validate

    install(store, Nightlights, work)
    install(store, make_processor("roads"), work)
    report = validate(str(store.root / "gambia" / "datapackage.json"))
    assert report.valid, report.flatten(["type", "note"])


def test_list_and_get_package(store, work):
    store.ensure_package(GAMBIA)
    install(store, Nightlights, work)
    assert store.list_packages() == [{"boundary_name": "gambia", "uri": "/packages/gambia/"}]
    assert store.dataset_versions("gambia") == [("test_processor", "version_1")]
    package = store.get_package("gambia")
    (dataset,) = package["datasets"]
    assert dataset["name"] == resource_name(Nightlights) and dataset["processor"] == "test_processor.version_1"
    assert dataset["files"][0]["bytes"] == 4
    assert package["datapackage"]["name"] == "gambia"


# -- HTML ------------------------------------------------------------------------------------------

def test_html_pages_escape_processor_metadata(store, work):
    evil = make_processor("evil", title=f"Evil {XSS}", citation=f"Cite {XSS} & co")
    install(store, evil, work)
    folder = store.root / "gambia"
    pages = {p: (folder / p).read_text() for p in (
        "index.html", "license.html", "version.html", "datasets/evil/version_1/index.html", "datasets/evil/version_1/license.html")}
    for page, text in pages.items():
        assert "<script" not in text, page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages["datasets/evil/version_1/index.html"]
    assert "Cite &lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in pages["license.html"]
    assert "Evil &lt;script&gt;" in pages["index.html"]
    # the JSON keeps the text as given
    assert store.read_datapackage("gambia")["resources"][0]["citation"] == f"Cite {XSS} & co"


def test_html_escapes_boundary_long_name(store, work):
    boundary = {"name": "evilland", "name_long": XSS}
    store.ensure_package(boundary)
    install(store, Nightlights, work, boundary)
    for page in ("index.html", "license.html", "version.html"):
        text = (store.root / "evilland" / page).read_text()
        assert "<script" not in text and "&lt;script&gt;" in text


# -- concurrency -----------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from backend.packages import PackageStore
    from tests.test_packages import GAMBIA, install, make_processor

    root, work, go, action, index = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    store = PackageStore(root)
    go.with_name(f"ready-{index}").touch()  # imported and at the start line
    while not go.exists():  # start together, so the updates overlap
        time.sleep(0.005)
    for attempt in range(3):
        if action == "install":
            install(store, make_processor(f"dataset_{index}", payload=f"{index}-{attempt}".encode()), work)
        else:
            store.add_provenance(GAMBIA, {"job_id": f"job-{index}-{attempt}", "processor": f"dataset_{index}"})
    """
)


def _run_children(tmp_path: Path, store: PackageStore, work: Path, action: str, n: int = 8) -> None:
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen([sys.executable, "-c", _CHILD, str(store.root), str(work), str(go), action, str(i)],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(n)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{i}").exists() for i in range(n)):  # every child at the start line
        assert time.monotonic() < deadline and all(c.poll() is None for c in children), "a child did not reach the start line"
        time.sleep(0.01)
    go.touch()
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err.decode()


def test_installs_from_8_processes_at_once_all_land_in_a_valid_datapackage(tmp_path, store, work):
    from frictionless import validate

    _run_children(tmp_path, store, work, "install")

    package = store.read_datapackage("gambia")
    assert [r["name"] for r in package["resources"]] == [f"dataset_{i}-version_1" for i in range(8)]
    for i, resource in enumerate(package["resources"]):
        assert resource["hashes"] == [hashlib.sha256(f"{i}-2".encode()).hexdigest()]
    report = validate(str(store.root / "gambia" / "datapackage.json"))
    assert report.valid, report.flatten(["type", "note"])
    assert not [p for p in (store.root / "gambia").rglob(".*") if p.name != ".lock"]


def test_provenance_from_8_processes_at_once_keeps_every_entry(tmp_path, store, work):
    _run_children(tmp_path, store, work, "provenance")
    entries = store.read_provenance("gambia")
    assert sorted(e["job_id"] for e in entries.values()) == sorted(f"job-{i}-{a}" for i in range(8) for a in range(3))


def test_installs_and_provenance_from_8_threads_at_once_all_recorded(store, work):
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            processor = make_processor(f"dataset_{i}")
            output, out = run_processor(processor, work)
            barrier.wait()
            store.install_dataset(GAMBIA, processor, output, out)
            store.add_provenance(GAMBIA, {"job_id": f"job-{i}"})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(store.read_datapackage("gambia")["resources"]) == 8
    assert sorted(e["job_id"] for e in store.read_provenance("gambia").values()) == [f"job-{i}" for i in range(8)]


def test_readers_never_see_a_half_written_datapackage(store, work):
    install(store, make_processor("dataset_0"), work)
    path = store.root / "gambia" / "datapackage.json"
    stop = threading.Event()
    reads, failures = [0], []

    def reader() -> None:
        while not stop.is_set():
            try:
                json.loads(path.read_text(encoding="utf-8"))
                reads[0] += 1
            except (json.JSONDecodeError, FileNotFoundError) as exc:
                failures.append(repr(exc))

    def writer(i: int) -> None:
        for attempt in range(6):
            install(store, make_processor(f"dataset_{i}", payload=f"{attempt}".encode() * 5000), work)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(60)
    stop.set()
    for t in readers:
        t.join(10)
    assert failures == []
    assert reads[0] > 10
    assert len(store.read_datapackage("gambia")["resources"]) == 4
