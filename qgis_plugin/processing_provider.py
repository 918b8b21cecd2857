"""Processing provider `ccg_autopkg`: "Create data package" and "Load data package".

The algorithms run in processing's worker thread (or the caller's thread for `processing.run()`):
HTTP goes through `QgsBlockingNetworkRequest` (`blocking_client.BlockingClient`), package files
through `loader.fetch_package`, and the layers are opened and styled there too
(`layers.build_layers`: the same code the dock's task uses). `postProcessAlgorithm` runs on the
GUI thread (QGIS's toolbox calls it from the task's `finished()`): it only starts a
`layers.LayerInserter`, which adds the layers in small slices while QGIS keeps responding; when
the whole algorithm ran on the GUI thread (a blocking `processing.run()`), they are added at once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

from qgis.core import (
    QgsApplication,
    QgsFeatureRequest,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFolder,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterString,
    QgsProcessingProvider,
    QgsProject,
)
from qgis.PyQt.QtCore import QThread
from qgis.PyQt.QtGui import QIcon

from .__about__ import ICON_PATH, PLUGIN_NAME, __version__
from .auth import bearer_header, load_token
from .api.blocking_client import BackendRequestError, BlockingClient
from .api.contract import DONE_STATES, GroupStatus, JobState
from .geometry import NoPolygonsError, dissolve_to_wgs84, geometry_to_geojson
from .layers import SYNTHETIC_NOTE, BuiltLayers, LayerInserter, Selection, build_layers, plan_package, selection_from_text
from .loader import cache_dir, fetch_package, local_package_roots, package_files
from .settings import settings

PROVIDER_ID = "ccg_autopkg"
POLL_SECONDS = 0.5
JOB_SHARE = 80.0  # progress: the job up to 80 %, fetching the files the rest


@dataclass
class Catalogue:
    """What the backend answered last (the dock fills it when it connects): dataset versions with
    their labels and the boundary names. Empty until then: the parameters are free text."""

    datasets: dict[str, str] = field(default_factory=dict)  # processor name -> label
    boundaries: list[str] = field(default_factory=list)


def with_help(parameter: QgsProcessingParameterDefinition, text: str) -> QgsProcessingParameterDefinition:
    parameter.setHelp(text)
    return parameter


def default_backend_url() -> str:
    return settings.backend_url


def _auth_headers(token: str) -> dict[bytes, bytes]:
    authorization = bearer_header(token)
    return {b"Authorization": authorization} if authorization else {}


def _on_context_thread(context: QgsProcessingContext) -> bool:
    thread = context.thread() if hasattr(context, "thread") else None
    app = QgsApplication.instance()
    return QThread.currentThread() is (thread or (app.thread() if app is not None else None))


class _PackageAlgorithm(QgsProcessingAlgorithm):
    """Shared parts: backend URL parameter, fetching and loading a package."""

    BACKEND_URL = "BACKEND_URL"
    BOUNDARY = "BOUNDARY"
    BOUNDARY_TEXT = "BOUNDARY_TEXT"
    LOAD = "LOAD"
    BOUNDARY_NAME = "BOUNDARY_NAME"
    PACKAGE_FOLDER = "PACKAGE_FOLDER"
    PACKAGE_URL = "PACKAGE_URL"
    LOADED_LAYERS = "LOADED_LAYERS"

    SLICES = "SLICES"

    def __init__(self, catalogue: Optional[Catalogue] = None):
        super().__init__()
        self.catalogue = catalogue or Catalogue()
        self._selection: Optional[Selection] = None
        self._results: dict[str, Any] = {}
        self._to_load: Optional[BuiltLayers] = None
        self._built_on_gui_thread = False

    def group(self) -> str:
        return ""

    def groupId(self) -> str:  # noqa: N802
        return ""

    def icon(self) -> QIcon:
        return QIcon(ICON_PATH)

    def _url_parameter(self) -> QgsProcessingParameterString:
        return with_help(QgsProcessingParameterString(self.BACKEND_URL, "Backend URL", defaultValue=default_backend_url()),
                         "Base URL of the CCG AutoPackaging backend (autopkg serve); default from Settings → Options.")

    def _slices_parameter(self) -> QgsProcessingParameterString:
        return with_help(QgsProcessingParameterString(self.SLICES, "Slices to load (e.g. return_period=100,1000; model=constant)",
                                                      optional=True),
                         "Which files of multi-file datasets become layers: dimension=value[,value…] pairs separated by ';' "
                         "(dimensions and values as in the package's datapackage.json). Empty: every file.")

    def _boundary_parameter(self) -> QgsProcessingParameterDefinition:
        """A choice among the backend's boundaries when it answered, else free text."""
        description = "Boundary"
        if self.catalogue.boundaries:
            parameter = QgsProcessingParameterEnum(self.BOUNDARY, description, self.catalogue.boundaries, allowMultiple=False,
                                                   optional=True, usesStaticStrings=True)
        else:
            parameter = QgsProcessingParameterString(self.BOUNDARY, description, optional=True)
        return with_help(parameter, "A boundary of the backend, by name (e.g. gambia, kenya_nairobi).")

    def _boundary_name(self, parameters, context) -> str:
        typed = (self.parameterAsString(parameters, self.BOUNDARY_TEXT, context) or "").strip()
        if typed:
            return typed
        if isinstance(self.parameterDefinition(self.BOUNDARY), QgsProcessingParameterEnum):
            return (self.parameterAsEnumString(parameters, self.BOUNDARY, context) or "").strip()
        return (self.parameterAsString(parameters, self.BOUNDARY, context) or "").strip()

    def _boundary_text_parameter(self) -> QgsProcessingParameterString:
        return with_help(QgsProcessingParameterString(self.BOUNDARY_TEXT, "…or a boundary name (free text)", optional=True),
                         "Any boundary name, e.g. one not listed yet (a custom boundary uploaded meanwhile); wins over the choice.")

    def _read_selection(self, parameters, context) -> None:
        try:
            self._selection = selection_from_text(self.parameterAsString(parameters, self.SLICES, context) or "")
        except ValueError as exc:
            raise QgsProcessingException(f"Slices: {exc}") from None

    def _client(self, parameters, context, feedback) -> BlockingClient:
        url = (self.parameterAsString(parameters, self.BACKEND_URL, context) or "").strip() or default_backend_url()
        return BlockingClient(url, feedback, token=load_token())

    def _fetch(self, client: BlockingClient, boundary: str, context: QgsProcessingContext, feedback: QgsProcessingFeedback,
               start: float, load: bool) -> None:
        """Package files into the cache (or the backend's own folder on this machine), opened as
        layers when they are to be loaded; sets outputs."""
        package = client.package(boundary)
        files = package_files(package, client.url)
        feedback.pushInfo(f"Package {boundary}: {len(files)} file(s)")

        fetch_end = start + (100.0 - start) * (0.5 if load else 1.0)

        def fetching(percent: float) -> None:
            feedback.setProgress(start + (fetch_end - start) * percent / 100.0)

        try:
            result = fetch_package(boundary, files, cache_dir(), feedback=feedback, progress=fetching,
                                   local_roots=local_package_roots(client.base_url), client=client,
                                   headers=_auth_headers(client.token))
        except RuntimeError as exc:
            raise QgsProcessingException(f"Package {boundary}: {exc}") from None
        feedback.pushInfo(f"{result.downloaded} downloaded, {result.cached} from the cache, {result.local} used in place")
        if result.outline_error:
            feedback.reportError(f"Boundary outline of {boundary}: {result.outline_error}", False)
        self._results[self.PACKAGE_FOLDER] = str(result.folder or "")
        self._results[self.PACKAGE_URL] = client.url(package.get("uri", ""))
        if load:
            plans = plan_package(package, result.files, selection=self._selection, outline=result.outline is not None)
            try:  # layers already in the project are dropped when inserted (LayerInserter)
                self._to_load = build_layers(package, plans, outline=result.outline,
                                             feedback=feedback, progress=lambda p: feedback.setProgress(fetch_end + (100.0 - fetch_end) * p / 100.0))
            except RuntimeError as exc:
                raise QgsProcessingException(f"Package {boundary}: {exc}") from None
            self._built_on_gui_thread = QThread.currentThread() is QgsApplication.instance().thread()
            feedback.pushInfo(f"{len(self._to_load.layers)} layer(s) opened")

    def postProcessAlgorithm(self, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict[str, Any]:  # noqa: N802
        results = dict(self._results)
        results.setdefault(self.LOADED_LAYERS, 0)
        built, self._to_load = self._to_load, None
        if built is None:
            return results
        if not _on_context_thread(context):
            feedback.reportError("Not on the project's thread: the package was fetched but not added to the project; "
                                 "run 'Load data package' to add it.", False)
            return results
        for failure in built.failed:
            feedback.reportError(failure, False)
        inserter = LayerInserter(built, context.project() or QgsProject.instance())
        if (built.package.get("datapackage") or {}).get("synthetic"):
            feedback.reportError(SYNTHETIC_NOTE, False)
        if self._built_on_gui_thread:  # the caller blocks anyway (processing.run on the GUI thread)
            report = inserter.run_now()
            feedback.pushInfo(f"{len(report.added)} layer(s) added, {len(report.existing)} already in the project")
            results[self.LOADED_LAYERS] = len(report.added) + len(report.existing)
        else:  # QGIS stays responsive while the layers arrive
            inserter.start()
            feedback.pushInfo(f"{len(built.layers)} layer(s) being added to the project")
            results[self.LOADED_LAYERS] = len(built.layers)
        return results


class CreatePackageAlgorithm(_PackageAlgorithm):
    """Submit a job for a boundary (by name, or a polygon layer uploaded as a custom boundary)."""

    POLYGONS = "POLYGONS"
    PROCESSORS = "PROCESSORS"
    WAIT = "WAIT"
    JOB_ID = "JOB_ID"
    JOB_STATUS = "JOB_STATUS"

    def name(self) -> str:
        return "create_package"

    def displayName(self) -> str:  # noqa: N802
        return "Create data package"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Cuts the chosen datasets to a boundary on the CCG AutoPackaging backend.\n\n"
            "Boundary: a boundary name from the backend (e.g. gambia, kenya_nairobi), or a polygon layer "
            "(its polygons, or only the selected ones, are dissolved, reprojected to EPSG:4326 and uploaded "
            "as a custom boundary; a boundary name given with it names the new boundary).\n"
            "Datasets: the dataset versions to cut (a list from the backend once the panel has connected; "
            "else comma-separated 'dataset.version', e.g. natural_earth_admin1.version_1).\n"
            "Wait for completion: follow the job, then fetch the package files into the local cache "
            "(cancelling the algorithm cancels the job). Load into project: add the package as styled layers, "
            "only the chosen slices of multi-file datasets (e.g. return_period=100).\n\n"
            "Works in models and batch mode: outputs are the job id and status, the boundary name, the package "
            "folder and URL, and the number of layers loaded."
        )

    def createInstance(self) -> "CreatePackageAlgorithm":  # noqa: N802
        return CreatePackageAlgorithm(self.catalogue)

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(self._url_parameter())
        self.addParameter(self._boundary_parameter())
        self.addParameter(self._boundary_text_parameter())
        self.addParameter(with_help(QgsProcessingParameterFeatureSource(self.POLYGONS, "…or a polygon layer (uploaded as a custom boundary)",
                                                                        [QgsProcessing.TypeVectorPolygon], optional=True),
                                    "Its polygons (or the selected ones) dissolved, in EPSG:4326, become a new boundary."))
        if self.catalogue.datasets:
            names = sorted(self.catalogue.datasets)
            datasets = QgsProcessingParameterEnum(self.PROCESSORS, "Datasets", names, allowMultiple=True, usesStaticStrings=True)
        else:
            datasets = QgsProcessingParameterString(self.PROCESSORS, "Datasets (comma-separated dataset.version)")
        self.addParameter(with_help(datasets, "The dataset versions to cut to the boundary."))
        self.addParameter(with_help(QgsProcessingParameterBoolean(self.WAIT, "Wait for completion", defaultValue=True),
                                    "Follow the job, then fetch the package files into the local cache."))
        self.addParameter(with_help(QgsProcessingParameterBoolean(self.LOAD, "Load into project", defaultValue=True),
                                    "Add the package to the project as styled layers (needs Wait for completion)."))
        self.addParameter(self._slices_parameter())
        self.addOutput(QgsProcessingOutputString(self.JOB_ID, "Job id"))
        self.addOutput(QgsProcessingOutputString(self.JOB_STATUS, "Job status"))
        self.addOutput(QgsProcessingOutputString(self.BOUNDARY_NAME, "Boundary name"))
        self.addOutput(QgsProcessingOutputFolder(self.PACKAGE_FOLDER, "Package folder"))
        self.addOutput(QgsProcessingOutputString(self.PACKAGE_URL, "Package URL"))
        self.addOutput(QgsProcessingOutputNumber(self.LOADED_LAYERS, "Layers in the project"))

    def processAlgorithm(self, parameters, context, feedback) -> dict[str, Any]:  # noqa: N802
        client = self._client(parameters, context, feedback)
        boundary = self._boundary_name(parameters, context)
        if isinstance(self.parameterDefinition(self.PROCESSORS), QgsProcessingParameterEnum):
            processors = self.parameterAsEnumStrings(parameters, self.PROCESSORS, context)
        else:
            processors = [p.strip() for p in (self.parameterAsString(parameters, self.PROCESSORS, context) or "").replace(";", ",").split(",") if p.strip()]
        self._read_selection(parameters, context)
        wait = self.parameterAsBool(parameters, self.WAIT, context)
        load = self.parameterAsBool(parameters, self.LOAD, context)
        if not processors:
            raise QgsProcessingException("Give at least one dataset as 'dataset.version' (comma-separated)")
        source = self.parameterAsSource(parameters, self.POLYGONS, context)
        try:
            if source is not None:
                boundary = self._upload(client, source, boundary, context, feedback)
            elif not boundary:
                raise QgsProcessingException("Give a boundary name or a polygon layer")
            job_id = client.submit_job(boundary, processors)
        except BackendRequestError as exc:
            raise QgsProcessingException(f"{client.base_url}: {exc}") from None
        feedback.pushInfo(f"Job {job_id} submitted for {boundary}: {', '.join(processors)}")
        self._results = {self.JOB_ID: job_id, self.JOB_STATUS: GroupStatus.PENDING.value, self.BOUNDARY_NAME: boundary,
                         self.PACKAGE_FOLDER: "", self.PACKAGE_URL: "", self.LOADED_LAYERS: 0}
        if not wait:
            if load:
                feedback.reportError("Load into project needs 'Wait for completion': nothing loaded", False)
            return dict(self._results)
        try:
            status = self._follow(client, job_id, feedback)
            self._results[self.JOB_STATUS] = status.get("job_group_status", "")
            states = {p["processor_name"]: p.get("job_status") for p in status.get("job_group_processors", [])}
            for p in status.get("job_group_processors", []):
                if p.get("job_status") == JobState.FAILURE:
                    result = p.get("job_result") or {}
                    feedback.reportError(f"{p['processor_name']} failed: {result.get('failed') or result}", False)
            if status.get("job_group_cancelled"):
                raise QgsProcessingException(f"Job {job_id} was cancelled")
            ready = [n for n, s in states.items() if s in DONE_STATES]
            if not ready:
                raise QgsProcessingException(f"Job {job_id}: no dataset was produced ({', '.join(f'{n}: {s}' for n, s in states.items())})")
            feedback.pushInfo(f"Package {boundary}: {len(ready)} of {len(states)} dataset(s) ready")
            self._fetch(client, boundary, context, feedback, JOB_SHARE, load)
        except BackendRequestError as exc:
            if feedback.isCanceled():
                raise QgsProcessingException("Cancelled") from None
            raise QgsProcessingException(f"Job {job_id}: {exc}") from None
        return dict(self._results)

    def _upload(self, client: BlockingClient, source, name: str, context, feedback) -> str:
        request = QgsFeatureRequest().setNoAttributes()
        try:
            geometry = dissolve_to_wgs84(source.getFeatures(request), source.sourceCrs(), context.transformContext())
        except NoPolygonsError as exc:
            raise QgsProcessingException(f"Polygon layer: {exc}") from None
        boundary = client.upload_boundary(geometry_to_geojson(geometry), name=name or None, name_long=name or None)
        feedback.pushInfo(f"Custom boundary {boundary['name']} ({boundary.get('name_long') or ''}) uploaded")
        return boundary["name"]

    def _follow(self, client: BlockingClient, job_id: str, feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Poll the job until COMPLETE; the algorithm's cancellation cancels the job (DELETE)."""
        last_task = None
        while True:
            if feedback.isCanceled():
                self._cancel(client, job_id, feedback)
                raise QgsProcessingException(f"Cancelled: job {job_id} cancelled on the backend")
            try:
                status = client.job(job_id)
            except BackendRequestError:
                if not feedback.isCanceled():
                    raise
                continue  # the cancel aborted this poll in flight: the job is cancelled at the loop's top
            feedback.setProgress(JOB_SHARE * float(status.get("job_group_percent_complete") or 0) / 100.0)
            for p in status.get("job_group_processors", []):
                task = (p.get("job_progress") or {}).get("current_task")
                key = (p["processor_name"], p.get("job_status"), task)
                if task and key != last_task:
                    feedback.setProgressText(f"{p['processor_name']}: {p.get('job_status')} {task}")
                    last_task = key
            if status.get("job_group_status") == GroupStatus.COMPLETE:
                return status
            deadline = time.monotonic() + POLL_SECONDS
            while time.monotonic() < deadline and not feedback.isCanceled():
                time.sleep(0.05)

    @staticmethod
    def _cancel(client: BlockingClient, job_id: str, feedback: QgsProcessingFeedback) -> None:
        plain = BlockingClient(client.base_url, token=client.token)  # the cancelled feedback would abort this request too
        try:
            plain.cancel_job(job_id)
            feedback.pushInfo(f"Job {job_id} cancelled")
        except BackendRequestError as exc:
            feedback.reportError(f"Cancelling job {job_id} failed: {exc}", False)


class LoadPackageAlgorithm(_PackageAlgorithm):
    """Fetch an existing package and add it to the project."""

    def name(self) -> str:
        return "load_package"

    def displayName(self) -> str:  # noqa: N802
        return "Load data package"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Fetches the package of a boundary from the CCG AutoPackaging backend into the local cache "
                "(files already cached with the same sha256 are kept; the backend's own files are used in place "
                "when its package root is on this machine) and adds it to the project as styled layers: collapsed "
                "groups per dataset dimension, one visible layer per dataset. Slices: only some files of "
                "multi-file datasets, e.g. 'return_period=100,1000; model=constant'.")

    def createInstance(self) -> "LoadPackageAlgorithm":  # noqa: N802
        return LoadPackageAlgorithm(self.catalogue)

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(self._url_parameter())
        self.addParameter(self._boundary_parameter())
        self.addParameter(self._boundary_text_parameter())
        self.addParameter(with_help(QgsProcessingParameterBoolean(self.LOAD, "Load into project", defaultValue=True),
                                    "Add the package to the project (else only fetch its files)."))
        self.addParameter(self._slices_parameter())
        self.addOutput(QgsProcessingOutputString(self.BOUNDARY_NAME, "Boundary name"))
        self.addOutput(QgsProcessingOutputFolder(self.PACKAGE_FOLDER, "Package folder"))
        self.addOutput(QgsProcessingOutputString(self.PACKAGE_URL, "Package URL"))
        self.addOutput(QgsProcessingOutputNumber(self.LOADED_LAYERS, "Layers in the project"))

    def processAlgorithm(self, parameters, context, feedback) -> dict[str, Any]:  # noqa: N802
        client = self._client(parameters, context, feedback)
        boundary = self._boundary_name(parameters, context)
        if not boundary:
            raise QgsProcessingException("Give a boundary name")
        self._read_selection(parameters, context)
        self._results = {self.BOUNDARY_NAME: boundary, self.PACKAGE_FOLDER: "", self.PACKAGE_URL: "", self.LOADED_LAYERS: 0}
        try:
            self._fetch(client, boundary, context, feedback, 0.0, self.parameterAsBool(parameters, self.LOAD, context))
        except BackendRequestError as exc:
            raise QgsProcessingException(f"Package {boundary!r}: {exc}") from None
        return dict(self._results)


class CcgProcessingProvider(QgsProcessingProvider):
    def __init__(self):
        super().__init__()
        self.catalogue = Catalogue()

    def update_catalogue(self, datasets: dict[str, str] | None = None, boundaries: list[str] | None = None) -> None:
        """New choices from the backend: the algorithms are rebuilt with them."""
        if datasets is not None:
            self.catalogue.datasets = dict(datasets)
        if boundaries is not None:
            self.catalogue.boundaries = sorted(boundaries)
        self.refreshAlgorithms()

    def id(self) -> str:
        return PROVIDER_ID

    def name(self) -> str:
        return PLUGIN_NAME

    def longName(self) -> str:  # noqa: N802
        return f"{PLUGIN_NAME} {__version__}"

    def icon(self) -> QIcon:
        return QIcon(ICON_PATH)

    def loadAlgorithms(self) -> None:  # noqa: N802
        self.addAlgorithm(CreatePackageAlgorithm(self.catalogue))
        self.addAlgorithm(LoadPackageAlgorithm(self.catalogue))
