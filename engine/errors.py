"""Typed errors. Library code raises these; callers (CLI, GUI, runtime) decide how to report them."""


class StylecastError(Exception):
    """Base class for every error the engine raises on purpose."""


class SourceError(StylecastError):
    """A frame source cannot be opened or has failed (missing camera, unreadable file)."""


class BundleError(StylecastError):
    """A model bundle is invalid: bad manifest, unknown schema, missing file, checksum or shape mismatch."""


class BackendUnavailable(StylecastError):
    """An inference backend (onnxruntime, MNN) or optional library is not installed or cannot run a model."""


class SinkError(StylecastError):
    """An output (recorder, virtual camera) failed; the stream itself keeps running."""
