"""Backend errors. Each carries the HTTP status the API answers with; the message is the detail."""


class BackendError(Exception):
    status_code = 500

    @property
    def detail(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class InvalidRequest(BackendError):
    status_code = 400


class NotFound(BackendError):
    status_code = 404


class Conflict(BackendError):
    status_code = 409


class PayloadTooLarge(BackendError):
    status_code = 413


class BoundaryNotFound(NotFound):
    def __init__(self, name: str):
        super().__init__(f"Requested boundary {name} could not be found")


class InvalidBoundary(InvalidRequest):
    """Geometry or attributes of a boundary cannot be used (message says why)."""


class BoundaryExists(Conflict):
    def __init__(self, name: str):
        super().__init__(f"a different boundary named {name!r} already exists")


class JobNotFound(NotFound):
    def __init__(self, job_id: str):
        super().__init__(f"Job not found: {job_id}")


class PackageNotFound(NotFound):
    def __init__(self, name: str):
        super().__init__(f"Package {name} not found")


class PackageHasNoDatasets(NotFound):
    """The package folder holds no dataset version of a known processor."""

    def __init__(self, name: str):
        super().__init__(f"Package {name} has no existing or executing datasets")


class PackageBusy(Conflict):
    def __init__(self, name: str, job_ids: list[str]):
        super().__init__(f"Package {name} has unfinished jobs ({', '.join(job_ids)}); wait for them or cancel them first")


class UnsafePath(InvalidRequest):
    """A name would resolve outside the package root."""
