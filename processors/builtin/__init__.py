"""Built-in processors: every module here is scanned for Processor subclasses."""
