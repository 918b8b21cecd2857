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
        super().__init__(f"boundary not found: {name!r}")


class InvalidBoundary(InvalidRequest):
    """Geometry or attributes of a boundary cannot be used (message says why)."""


class BoundaryExists(Conflict):
    def __init__(self, name: str):
        super().__init__(f"a different boundary named {name!r} already exists")


class JobNotFound(NotFound):
    def __init__(self, job_id: str):
        super().__init__(f"job not found: {job_id!r}")


class PackageNotFound(NotFound):
    def __init__(self, name: str):
        super().__init__(f"package not found: {name!r}")


class UnsafePath(InvalidRequest):
    """A name would resolve outside the package root."""
