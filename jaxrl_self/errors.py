"""Errors a person must fix, shared by every layer: a bad config, argument, data file or workdir
(`ConfigError`), and file-system errors such as a full disk (`storage_error`, `naming_path`).
The CLI prints either as one line and exits with code 2."""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sys
import threading
from typing import Iterator, Optional


class ConfigError(ValueError):
    """A config problem a person must fix; the CLI prints it and exits with code 2."""


# errors of the file system a person must fix (a missing or unwritable path, a full disk)
USER_OS_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                  errno.EPERM)
# tensorstore (orbax's array writer) reports an OS error as a ValueError ending in "[os_error_code='28']"
_TENSORSTORE_OS_ERROR = re.compile(r"\[os_error_code='(\d+)'\]")


def exception_chain(error: Optional[BaseException]) -> Iterator[BaseException]:
    """`error`, its causes and contexts, and the members of exception groups (each once)."""
    seen, pending = set(), [error]
    while pending:
        link = pending.pop()
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        pending += [link.__cause__, None if link.__suppress_context__ else link.__context__,
                    *getattr(link, "exceptions", ())]


def storage_error(error: BaseException) -> Optional[OSError]:
    """The OSError with one of `USER_OS_ERRNOS` in `error`'s chain (tensorstore's ValueErrors
    included, as an OSError without a file name), else None; one that names a file first."""
    found = []
    for link in exception_chain(error):
        if isinstance(link, OSError) and link.errno in USER_OS_ERRNOS:
            found.append(link)
        match = _TENSORSTORE_OS_ERROR.search(str(link)) if isinstance(link, ValueError) else None
        if match and int(match.group(1)) in USER_OS_ERRNOS:
            code = int(match.group(1))
            found.append(OSError(code, os.strerror(code)))
    return next((link for link in found if link.filename), found[0] if found else None)


@contextlib.contextmanager
def naming_path(path) -> Iterator[None]:
    """Re-raises a storage error (`storage_error`) of the block as an OSError naming `path` when the
    original names no file, so that the one-line message says where the disk is full."""
    try:
        yield
    except Exception as error:
        found = storage_error(error)
        if found is None or found.filename:
            raise
        raise OSError(found.errno, found.strerror, str(path)) from error


def is_follow_on_of_storage_error(error: BaseException) -> bool:
    """A storage error, or what orbax's writers raise after one stopped their event loop
    ("Event loop is closed" from a write callback arriving late)."""
    return storage_error(error) is not None or (isinstance(error, RuntimeError) and str(error) == "Event loop is closed")


def quiet_background_storage_errors() -> None:
    """Stops the traceback printers of background threads and late callbacks (`sys.excepthook` as
    called from native threads, `threading.excepthook`, `sys.unraisablehook`) from printing a
    storage error or its follow-ons: the CLI reports the storage error once, in one line. Any
    other exception is printed as before."""
    def quiet(previous, error_of):
        def hook(*args):
            if not is_follow_on_of_storage_error(error_of(*args)):
                previous(*args)
        hook.quiets_storage_errors = True
        return hook

    if getattr(sys.excepthook, "quiets_storage_errors", False):
        return  # installed by an earlier call in this process
    sys.excepthook = quiet(sys.excepthook, lambda kind, error, traceback: error)
    threading.excepthook = quiet(threading.excepthook, lambda arguments: arguments.exc_value)
    sys.unraisablehook = quiet(sys.unraisablehook, lambda unraisable: unraisable.exc_value)


class DropStorageErrorTracebacks(logging.Filter):
    """A log filter (for the console's handlers) that drops records carrying a storage error: the
    libraries' background threads log its traceback, and the CLI reports it once, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or not is_follow_on_of_storage_error(error)
