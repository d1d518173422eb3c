"""File-system errors a person must fix: found anywhere in an exception chain (tensorstore's
ValueErrors included), named by their path, and kept out of background tracebacks."""
import errno

import pytest

from jaxrl_self.errors import is_follow_on_of_storage_error, naming_path, storage_error

def tensorstore_error():
    """A fresh copy (raising one sets its traceback and context) of what orbax's writer raises on a full disk."""
    return ValueError("RESOURCE_EXHAUSTED: Error writing \"d/1\": Failed to write 244 bytes to file 11: "
                      "No space left on device [os_error_code='28'] [tensorstore_spec='{}']")


def test_a_tensorstore_error_is_a_full_disk():
    found = storage_error(tensorstore_error())
    assert found.errno == errno.ENOSPC and found.strerror == "No space left on device" and found.filename is None
    assert storage_error(ValueError("DATA_LOSS: corrupted [os_error_code='5']")) is None  # EIO: not the person's to fix
    assert storage_error(RuntimeError("a bug")) is None


def test_the_error_that_names_a_file_is_preferred():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoints")
        except OSError:
            raise tensorstore_error()  # a later error of the same failure, naming no file
    except ValueError as error:
        assert storage_error(error).filename == "/runs/x/checkpoints"


def test_naming_path_names_the_directory_of_a_failed_write():
    with pytest.raises(OSError) as raised:
        with naming_path("/runs/x/checkpoints"):
            raise tensorstore_error()
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, "/runs/x/checkpoints")
    with pytest.raises(KeyError):  # anything else passes through unchanged
        with naming_path("/runs/x"):
            raise KeyError("x")


def test_follow_ons_of_a_full_disk_are_recognised():
    assert is_follow_on_of_storage_error(tensorstore_error())
    assert is_follow_on_of_storage_error(RuntimeError("Event loop is closed"))
    assert not is_follow_on_of_storage_error(RuntimeError("Event loop is closed, and more"))
    assert not is_follow_on_of_storage_error(ZeroDivisionError("a bug"))
