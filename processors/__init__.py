"""Pure data processing: one module per dataset. Imports neither qgis nor backend."""
from processors.base import (
    Boundary,
    DataLicense,
    Dimension,
    OutputFile,
    Processor,
    ProcessorContext,
    ProcessorMetadata,
    ProcessorOutput,
)

__all__ = ["Boundary", "DataLicense", "Dimension", "OutputFile", "Processor", "ProcessorContext", "ProcessorMetadata", "ProcessorOutput"]
