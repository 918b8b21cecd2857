"""The predecessor's test processors, listed when CCGAUTOPKG_INCLUDE_TEST_PROCESSORS is set."""
from __future__ import annotations

import time

from processors.base import Boundary, DataLicense, Processor, ProcessorContext, ProcessorMetadata, ProcessorOutput
from processors.errors import ProcessorError

CC_BY_4 = DataLicense(
    name="CC-BY-4.0",
    path="https://creativecommons.org/licenses/by/4.0/",
    title="Creative Commons Attribution 4.0",
)


def _wait(context: ProcessorContext, seconds: float) -> None:
    """Sleep in short steps so a cancel request is seen quickly."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        context.check_cancelled()
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


class TestProcessor(Processor):
    """Waits a little, then writes a small text file."""

    name = "test_processor"
    version = "version_1"
    is_test = True
    metadata = ProcessorMetadata(
        description="A test processor for nightlights",
        dataset="nightlights",
        author="Nightlights Author",
        license=CC_BY_4,
        origin_url="http://url",
        formats=("GeoTIFF",),
    )

    def generate(self, boundary: Boundary, context: ProcessorContext) -> ProcessorOutput:
        seconds = float(context.test_processor_seconds)
        context.progress(0, "waiting")
        _wait(context, seconds * 0.3)
        context.progress(30, "waiting")
        _wait(context, seconds * 0.7)
        filename = self.output_filename(boundary, "tif")
        (context.output_dir / filename).write_text("test")
        context.progress(100, "written")
        return ProcessorOutput(files=[filename], format="GEOPKG", description=self.metadata.description)

    def estimate(self, boundary: Boundary, context: ProcessorContext) -> dict:
        return {"bytes": 4, "files": 1, "method": "fixed: the test processor writes a 4-byte file"}


class TestFailProcessor(Processor):
    """Waits a little, then fails with a known message."""

    name = "test_fail_processor"
    version = "version_1"
    is_test = True
    metadata = ProcessorMetadata(
        description="A test processor that fails",
        dataset="",
        author="",
        license=CC_BY_4,
        origin_url="http://url",
        formats=("GeoTIFF",),
    )

    def generate(self, boundary: Boundary, context: ProcessorContext) -> ProcessorOutput:
        _wait(context, float(context.test_processor_seconds) * 0.3)
        context.progress(30, "about to fail")
        raise ProcessorError("test-fail-processor failed as expected")
