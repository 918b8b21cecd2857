"""CCG AutoPackaging backend: HTTP API, boundary store, job queue, package store, CLI, client."""
__version__ = "0.1.0"
