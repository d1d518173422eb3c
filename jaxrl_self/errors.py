"""Errors a person must fix, shared by every layer: a bad config, argument, data file or workdir
(`ConfigError`), and file-system errors such as a full disk (`storage_error`, `naming_path`).
The CLI prints either as one line and exits with code 2."""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
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
    included, as an OSError without a file name), else None."""
    for link in exception_chain(error):
        if isinstance(link, OSError) and link.errno in USER_OS_ERRNOS:
            return link
        match = _TENSORSTORE_OS_ERROR.search(str(link)) if isinstance(link, ValueError) else None
        if match and int(match.group(1)) in USER_OS_ERRNOS:
            code = int(match.group(1))
            return OSError(code, os.strerror(code))
    return None


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


class DropStorageErrorTracebacks(logging.Filter):
    """A log filter (for the console's handlers) that drops records carrying a storage error: the
    libraries' background threads log its traceback, and the CLI reports it once, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or storage_error(error) is None
