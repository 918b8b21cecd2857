"""Pure data processing: one module per dataset. Imports neither qgis nor backend."""
from processors.base import (  # noqa: F401  (the public interface of the package)
    Boundary,
    DataLicense,
    Processor,
    ProcessorContext,
    ProcessorMetadata,
    ProcessorOutput,
)
