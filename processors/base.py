"""The processor interface: metadata, boundary, context and outputs."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

from processors.errors import Cancelled

if TYPE_CHECKING:
    from processors.sources import SourceCache

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_]*\Z")


@dataclass(frozen=True)
class DataLicense:
    """A licence as written into datapackage.json: SPDX-like name, URL and title."""

    name: str
    path: str
    title: str


@dataclass(frozen=True)
class ProcessorMetadata:
    """What the API shows about a processor version, and what the package records."""

    description: str
    dataset: str
    author: str
    license: DataLicense
    origin_url: str
    formats: tuple[str, ...]
    title: str = ""
    title_long: str = ""
    summary: str = ""
    citation: str = ""


@dataclass(frozen=True)
class Boundary:
    """A boundary as processors see it: name and GeoJSON geometries in EPSG:4326."""

    name: str
    name_long: str
    geometry: Mapping[str, Any]  # GeoJSON MultiPolygon
    envelope: Mapping[str, Any]  # GeoJSON Polygon
    admin_level: int | None = None

    def shape(self):
        """The geometry as a shapely object."""
        from shapely.geometry import shape

        return shape(self.geometry)


@dataclass(frozen=True)
class Dimension:
    """One axis along which a multi-file dataset varies (model, return period, ...).

    `values` are the strings used in `OutputFile.dimensions`, in display order; `default` is the
    value of the slice shown first (e.g. the 100-year map)."""

    name: str
    title: str
    values: tuple[str, ...]
    default: str
    unit: str | None = None

    def __post_init__(self) -> None:
        if self.default not in self.values:
            raise ValueError(f"dimension {self.name}: default {self.default!r} is not one of its values")

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "title": self.title}
        if self.unit:
            out["unit"] = self.unit
        out.update(values=list(self.values), default=self.default)
        return out


@dataclass(frozen=True)
class OutputFile:
    """What a processor says about one file it wrote: a human label, its place along the
    dataset's dimensions, and whether it holds no data inside the boundary."""

    name: str  # file name in context.output_dir
    label: str
    dimensions: Mapping[str, str] = field(default_factory=dict)
    empty: bool = False


@dataclass(frozen=True)
class ProcessorOutput:
    """Files a processor wrote into `context.output_dir`, described as one resource.

    `details` (optional, one per file, any order) label the files and place them along
    `dimensions`; a file without details is labelled by its name. `synthetic` says the outputs
    were made from synthetic stand-ins (outputs carrying a SYNTHETIC tag are detected anyway)."""

    files: list[str]  # file names relative to context.output_dir
    format: str
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    dimensions: tuple[Dimension, ...] = ()
    details: tuple[OutputFile, ...] = ()
    synthetic: bool = False

    def detail(self, name: str) -> OutputFile:
        """The details of file `name` (a plain label when the processor gave none)."""
        return next((d for d in self.details if d.name == name), OutputFile(name=name, label=name))


#: Where Debian's (and most Linux) QGIS packages install Natural Earth's world map.
DEFAULT_WORLD_MAP_GPKG = Path("/usr/share/qgis/resources/data/world_map.gpkg")


@dataclass
class ProcessorContext:
    """Where a processor works, where its sources come from, how it reports progress and sees
    cancellation. `sources` is the source cache of this processor version (`source_dir`),
    reading from `source_mirror` instead of the origins when one is set."""

    output_dir: Path  # empty folder; everything written here is moved into the package
    processing_dir: Path  # scratch space, removed after the run
    source_dir: Path  # persistent source cache for this processor version, shared by workers
    source_mirror: str | None = None  # a base URL or a folder laid out `<mirror>/<host>/<path>`
    world_map_gpkg: Path = DEFAULT_WORLD_MAP_GPKG  # QGIS's Natural Earth world map
    test_processor_seconds: float = 1.0  # how long the predecessor's test processors run
    report: Callable[[float, str], None] = lambda percent, step: None
    is_cancelled: Callable[[], bool] = lambda: False
    sources: "SourceCache" = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from processors.sources import SourceCache

        self.sources = SourceCache(Path(self.source_dir), mirror=self.source_mirror or None,
                                   report=self.progress, check_cancelled=self.check_cancelled)

    def progress(self, percent: float, step: str) -> None:
        """Report progress (0-100) and the current step; stop here if cancelled."""
        self.check_cancelled()
        self.report(max(0.0, min(100.0, float(percent))), step)

    def check_cancelled(self) -> None:
        """Raise `Cancelled` when the job was cancelled."""
        if self.is_cancelled():
            raise Cancelled("cancelled")


class Processor:
    """A versioned dataset processor. Subclasses set `name`, `version`, `metadata`
    and implement `generate`."""

    name: ClassVar[str]
    version: ClassVar[str]
    metadata: ClassVar[ProcessorMetadata]
    is_test: ClassVar[bool] = False

    @classmethod
    def full_name(cls) -> str:
        """The API name, `dataset.version`."""
        return f"{cls.name}.{cls.version}"

    @classmethod
    def output_filename(cls, boundary: Boundary, ext: str, part: str | None = None) -> str:
        """`<name>-<version>[-<part>]-<boundary>.<ext>`, the package's file naming."""
        stem = "-".join(p for p in (cls.name, cls.version, part, boundary.name) if p)
        return f"{stem}.{ext}"

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The predecessor's processor-version shape used by `GET /v1/processors`."""
        meta = cls.metadata
        return {
            "name": cls.full_name(),
            "description": meta.description,
            "version": cls.version,
            "data_author": meta.author,
            "data_title": meta.title,
            "data_title_long": meta.title_long,
            "data_summary": meta.summary,
            "data_citation": meta.citation,
            "data_license": asdict(meta.license),
            "data_origin_url": meta.origin_url,
            "data_formats": list(meta.formats),
        }

    def generate(self, boundary: Boundary, context: ProcessorContext) -> ProcessorOutput:
        """Fetch sources, clip them to `boundary`, write into `context.output_dir`."""
        raise NotImplementedError

    def estimate(self, boundary: Boundary, context: ProcessorContext) -> dict[str, Any]:
        """Output size for `boundary` before running: `{"bytes", "files", "method"}`.

        Must not download anything: it reads source metadata from `context.source_dir` when the
        source was fetched before, or metadata the processor declares about its dataset
        (see `processors.estimate`). `bytes`/`files` are None when the processor cannot tell.
        """
        return {"bytes": None, "files": None, "method": "this processor gives no estimate"}
