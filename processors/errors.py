"""Errors raised by processors; the backend maps them to job states and messages."""


class ProcessorError(Exception):
    """A processor failed; the message is shown to the user as the job result."""


class ProcessorNotFound(KeyError):
    """No processor with that `dataset.version` name is registered."""

    def __str__(self) -> str:
        return f"unknown processor: {self.args[0]}"


class Cancelled(Exception):
    """The job was cancelled; raised at the processor's next progress check."""


class SourceUnavailable(ProcessorError):
    """A source could not be fetched or opened; the message names it."""


class NoDataForBoundary(ProcessorError):
    """The boundary does not overlap the dataset's coverage."""


class SourceCorrupt(SourceUnavailable):
    """A fetched source failed verification (size, hash, or an HTML page instead of data)."""


class UnsafeArchive(ProcessorError):
    """An archive has members that would escape the destination, links, or expands past a limit."""


class PathOutsideRoot(ProcessorError):
    """A path would lead outside its root folder: a symbolic link on the way, `..`, an absolute or
    over-long name (`processors.safepaths`)."""
