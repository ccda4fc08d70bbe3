"""The one error tree of fileflow.

::

    FileflowError
    ├── ConversionError            a step could not turn its input into its outputs
    │   ├── UnsupportedInput       no converter handles this type (or this variant of it)
    │   ├── CorruptInput           the bytes are broken, truncated or hostile
    │   ├── LimitExceeded          the input needs more than a declared limit (memory, size, pages, entries)
    │   ├── ToolCrashed            the converter's process died (segfault, abort, killed)   [transient]
    │   ├── ToolTimeout            the converter ran past its timeout and was stopped       [transient]
    │   └── ToolError              the converter raised something it did not classify
    ├── StorageUnavailable         storage could not be reached                             [transient]
    ├── FileLookupError            what an operator asked for (``fileflow show``) is not there
    │   ├── UnknownFile            no file has this id, id prefix or name
    │   └── AmbiguousFile          several files match; the candidates are listed
    └── InvalidRequest             an operator's command cannot be applied (a limit of 0, an
                                   unknown converter, a selection that makes no sense)

Only transient errors are retried (with backoff): a crash or a hang may not happen again, and
storage comes back; a corrupt or unsupported input fails the same way every time.
"""

from __future__ import annotations


class FileflowError(Exception):
    """Base of every error fileflow raises on purpose."""

    transient = False


class ConversionError(FileflowError):
    """A step could not turn its input into its outputs."""


class UnsupportedInput(ConversionError):
    """No converter handles this type, or this variant of it."""


class CorruptInput(ConversionError):
    """The input's bytes are broken, truncated or hostile."""


class LimitExceeded(ConversionError):
    """The input needs more than a declared limit allows."""


class ToolCrashed(ConversionError):
    """The converter's process died while working."""

    transient = True


class ToolTimeout(ConversionError):
    """The converter ran past its timeout and was stopped."""

    transient = True


class ToolError(ConversionError):
    """The converter raised an exception it did not classify."""


class StorageUnavailable(FileflowError):
    """Storage could not be reached."""

    transient = True


class InvalidRequest(FileflowError):
    """An operator's command cannot be applied as given (``fileflow limits``, ``fileflow reprocess``)."""


ERRORS: dict[str, type[FileflowError]] = {
    cls.__name__: cls
    for cls in (
        FileflowError,
        ConversionError,
        UnsupportedInput,
        CorruptInput,
        LimitExceeded,
        ToolCrashed,
        ToolTimeout,
        ToolError,
        StorageUnavailable,
        InvalidRequest,
    )
}


def rebuild(type_name: str, message: str) -> FileflowError:
    """The typed error for a name sent back by a child process."""
    return ERRORS.get(type_name, ToolError)(message)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, FileflowError) and exc.transient


class FileLookupError(FileflowError):
    """What an operator asked for is not there, or not only once."""


class UnknownFile(FileLookupError):
    """No file has this id, id prefix or name."""


class AmbiguousFile(FileLookupError):
    """Several files match an id prefix or a name."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates
