"""The package version, in a module of its own: the container records it as its producer, and
importing it from the package's ``__init__`` made the pipeline import the whole public API."""

__version__ = "0.1.0"
