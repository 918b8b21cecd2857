"""The processing provider `ccg_autopkg` via `processing.run()` against a real backend subprocess."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsProcessingException,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingFeedback,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)

NE = "natural_earth_admin1.version_1"
NE_FILE = "datasets/natural_earth_admin1/version_1/data/natural_earth_admin1-version_1-{b}.gpkg"


@pytest.fixture
def processing(qgis_processing, plugin):
    """`qgis.processing` with the plugin's provider registered by initGui()."""
    from qgis import processing as qgis_processing_module

    assert QgsApplication.processingRegistry().providerById("ccg_autopkg") is plugin.provider
    return qgis_processing_module


def polygon_layer_3857(features_wgs84: list[QgsRectangle]) -> QgsVectorLayer:
    """A memory polygon layer in EPSG:3857 with one square per rectangle given in lon/lat."""
    layer = QgsVectorLayer("Polygon?crs=EPSG:3857&field=name:string", "areas", "memory")
    to_3857 = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"), QgsCoordinateReferenceSystem("EPSG:3857"), QgsProject.instance())
    feats = []
    for i, rect in enumerate(features_wgs84):
        geometry = QgsGeometry.fromRect(rect)
        geometry.transform(to_3857)
        f = QgsFeature(layer.fields())
        f.setGeometry(geometry)
        f.setAttributes([f"area{i}"])
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    layer.updateExtents()
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_provider_lists_both_algorithms(processing, plugin):
    registry = QgsApplication.processingRegistry()
    create = registry.algorithmById("ccg_autopkg:create_package")
    load = registry.algorithmById("ccg_autopkg:load_package")
    assert create is not None and load is not None
    assert create.displayName() == "Create data package" and load.displayName() == "Load data package"
    names = [p.name() for p in create.parameterDefinitions()]
    assert names == ["BACKEND_URL", "BOUNDARY", "BOUNDARY_TEXT", "POLYGONS", "PROCESSORS", "WAIT", "LOAD", "SLICES"]
    assert all(p.help() for p in create.parameterDefinitions()), "every parameter says what it is"
    assert {o.name() for o in create.outputDefinitions()} >= {"JOB_ID", "BOUNDARY_NAME", "PACKAGE_FOLDER", "PACKAGE_URL"}
    assert create.parameterDefinition("BACKEND_URL").defaultValue() == "http://127.0.0.1:8000"
    assert create.flags() & create.FlagSupportsBatch


def test_parameters_become_choices_once_the_backend_answered(dock, processing, served, plugin_settings, tmp_path):
    """Datasets as a multiple choice, the boundary as a choice list (free text still accepted),
    and the algorithm runs inside a model."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingParameterEnum,
    )
    from qgis.PyQt.QtTest import QSignalSpy

    registry = QgsApplication.processingRegistry()
    if not registry.providerById("ccg_autopkg").catalogue.boundaries:  # the list may still be on its way
        assert QSignalSpy(dock.boundary_names_listed).wait(20000)
    create = registry.algorithmById("ccg_autopkg:create_package")
    datasets = create.parameterDefinition("PROCESSORS")
    assert isinstance(datasets, QgsProcessingParameterEnum) and datasets.allowMultiple() and datasets.usesStaticStrings()
    assert NE in datasets.options()
    boundary = create.parameterDefinition("BOUNDARY")
    assert isinstance(boundary, QgsProcessingParameterEnum) and "gambia" in boundary.options() and len(boundary.options()) > 4000

    # a model: create the package (no loading), its folder as the model's output
    model = QgsProcessingModelAlgorithm("cut gambia", "tests")
    child = QgsProcessingModelChildAlgorithm("ccg_autopkg:create_package")
    child.setChildId("create")
    child.addParameterSources("BACKEND_URL", [QgsProcessingModelChildParameterSource.fromStaticValue(served.url)])
    child.addParameterSources("BOUNDARY", [QgsProcessingModelChildParameterSource.fromStaticValue("gambia")])
    child.addParameterSources("PROCESSORS", [QgsProcessingModelChildParameterSource.fromStaticValue([NE])])
    child.addParameterSources("WAIT", [QgsProcessingModelChildParameterSource.fromStaticValue(True)])
    child.addParameterSources("LOAD", [QgsProcessingModelChildParameterSource.fromStaticValue(False)])
    output = QgsProcessingModelOutput("folder", "Package folder")
    output.setChildOutputName("PACKAGE_FOLDER")
    output.setChildId("create")
    child.setModelOutputs({"folder": output})
    model.addChildAlgorithm(child)
    result = processing.run(model, {})
    folder = Path(result["create:folder"])
    assert (folder / NE_FILE.format(b="gambia")).is_file()
    # free text still accepted, with the choice left empty; slices filter the files loaded
    again = processing.run("ccg_autopkg:load_package", {"BACKEND_URL": served.url, "BOUNDARY_TEXT": "gambia", "SLICES": "model=none"})
    assert again["BOUNDARY_NAME"] == "gambia" and again["LOADED_LAYERS"] == 1, "the dataset has no 'model' dimension: kept"
    with pytest.raises(QgsProcessingException, match="Slices"):
        processing.run("ccg_autopkg:load_package", {"BACKEND_URL": served.url, "BOUNDARY_TEXT": "gambia", "SLICES": "model"})


def test_unload_removes_the_provider(qgis_iface, qgis_new_project, plugin_settings, qgis_processing):
    import qgis_plugin

    registry = QgsApplication.processingRegistry()
    for _ in range(2):
        instance = qgis_plugin.classFactory(qgis_iface)
        instance.initGui()
        assert registry.providerById("ccg_autopkg") is not None
        assert registry.algorithmById("ccg_autopkg:create_package") is not None
        instance.unload()
        assert registry.providerById("ccg_autopkg") is None
        assert registry.algorithmById("ccg_autopkg:create_package") is None


def test_create_package_by_name_waits_and_loads(processing, served, plugin_settings):
    feedback = QgsProcessingFeedback()
    progress = []
    feedback.progressChanged.connect(progress.append)
    result = processing.run("ccg_autopkg:create_package", {
        "BACKEND_URL": served.url, "BOUNDARY": "gambia", "PROCESSORS": f"{NE}, test_processor.version_1",
        "WAIT": True, "LOAD": True,
    }, feedback=feedback)
    assert result["BOUNDARY_NAME"] == "gambia" and result["JOB_ID"] and result["JOB_STATUS"] == "COMPLETE"
    assert result["PACKAGE_URL"] == f"{served.url}/packages/gambia/"
    cache = Path(plugin_settings.value("ccg_autopkg/cache_dir"))
    assert Path(result["PACKAGE_FOLDER"]) == cache / "gambia"
    assert (cache / "gambia" / NE_FILE.format(b="gambia")).is_file()
    assert progress and max(progress) == pytest.approx(100)
    group = QgsProject.instance().layerTreeRoot().findGroup("Gambia")
    assert group is not None
    # boundary outline on top, then the dataset group
    first = group.children()[0]
    assert first.layer() is not None and first.layer().name() == "Gambia boundary"
    layers = [n.layer() for n in group.findGroup("Natural Earth Admin 1 States and Provinces").findLayers()]
    assert len(layers) == 1 and layers[0].isValid() and layers[0].featureCount() == 6
    assert result["LOADED_LAYERS"] == 1
    # "Load data package" on the same package: nothing duplicated, all from the cache
    again = processing.run("ccg_autopkg:load_package", {"BACKEND_URL": served.url, "BOUNDARY": "gambia"})
    assert again["LOADED_LAYERS"] == 1 and again["PACKAGE_FOLDER"] == result["PACKAGE_FOLDER"]
    assert len(QgsProject.instance().mapLayers()) == 2  # the dataset layer and the outline


def test_create_package_from_selected_polygons_in_3857(processing, served, plugin_settings):
    # two squares inside Kenya; only the first is selected: the uploaded boundary is that square
    layer = polygon_layer_3857([QgsRectangle(36.6, -1.5, 37.0, -1.1), QgsRectangle(38.0, 0.0, 38.5, 0.5)])
    first = next(layer.getFeatures())
    layer.selectByIds([first.id()])
    result = processing.run("ccg_autopkg:create_package", {
        "BACKEND_URL": served.url,
        "POLYGONS": QgsProcessingFeatureSourceDefinition(layer.id(), True),
        "PROCESSORS": NE, "WAIT": True, "LOAD": False,
    })
    name = result["BOUNDARY_NAME"]
    assert name.startswith("custom_")
    boundary = served.get(f"/v1/boundaries/{name}").json()
    from qgis_plugin.gui.dock import geojson_to_wkt

    uploaded = QgsGeometry.fromWkt(geojson_to_wkt(boundary["geometry"]))
    box = uploaded.boundingBox()
    assert abs(box.xMinimum() - 36.6) < 1e-6 and abs(box.xMaximum() - 37.0) < 1e-6
    assert abs(box.yMinimum() + 1.5) < 1e-6 and abs(box.yMaximum() + 1.1) < 1e-6
    assert uploaded.area() == pytest.approx(0.16, rel=1e-6)  # the selected square only, in degrees
    assert (Path(result["PACKAGE_FOLDER"]) / NE_FILE.format(b=name)).is_file()
    assert QgsProject.instance().layerTreeRoot().findGroup(name) is None  # LOAD false
    # the same polygon again answers the existing boundary (200), not a new one
    again = processing.run("ccg_autopkg:create_package", {
        "BACKEND_URL": served.url, "POLYGONS": QgsProcessingFeatureSourceDefinition(layer.id(), True),
        "PROCESSORS": NE, "WAIT": False, "LOAD": False,
    })
    assert again["BOUNDARY_NAME"] == name and again["JOB_ID"] != result["JOB_ID"]


def test_create_package_errors_are_processing_exceptions(processing, served):
    with pytest.raises(QgsProcessingException, match="boundary not found|atlantis"):
        processing.run("ccg_autopkg:create_package", {"BACKEND_URL": served.url, "BOUNDARY": "atlantis", "PROCESSORS": NE})
    with pytest.raises(QgsProcessingException, match="boundary name or a polygon layer"):
        processing.run("ccg_autopkg:create_package", {"BACKEND_URL": served.url, "PROCESSORS": NE})
    with pytest.raises(QgsProcessingException, match="Package 'atlantis'"):
        processing.run("ccg_autopkg:load_package", {"BACKEND_URL": served.url, "BOUNDARY": "atlantis"})


class RecordingFeedback(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.infos: list[str] = []

    def pushInfo(self, info: str) -> None:  # noqa: N802
        self.infos.append(info)
        super().pushInfo(info)


def test_cancelling_the_algorithm_cancels_the_job(processing, backend, backend_env):
    backend_env["CCGAUTOPKG_TEST_PROCESSOR_SECONDS"] = "20"
    backend.serve(workers=1)
    feedback = RecordingFeedback()

    def cancel_once_running() -> None:
        """processing.run() runs in this thread: cancel from another one, as the dialog's button
        would, once the job's processor is running on the backend."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            submitted = [i.split()[1] for i in list(feedback.infos) if i.startswith("Job ") and "submitted" in i]
            if submitted and backend.get(f"/v1/jobs/{submitted[0]}").json()["job_group_state"] == "EXECUTING":
                break
            time.sleep(0.05)
        feedback.cancel()

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    started = time.monotonic()
    with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
        processing.run("ccg_autopkg:create_package", {
            "BACKEND_URL": backend.url, "BOUNDARY": "kenya", "PROCESSORS": "test_processor.version_1", "WAIT": True,
        }, feedback=feedback)
    canceller.join()
    assert time.monotonic() - started < 20, "cancelled before the 20 s processor could end"
    (submitted,) = [i for i in feedback.infos if i.startswith("Job ") and "submitted" in i]
    job_id = submitted.split()[1]
    assert f"Job {job_id} cancelled" in feedback.infos
    status = backend.wait_job(job_id, timeout=30)
    assert status["job_group_cancelled"] is True
    assert {p["job_status"] for p in status["job_group_processors"]} == {"REVOKED"}
