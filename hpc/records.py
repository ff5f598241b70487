"""Reading the files hpc-tf is handed: bounded, UTF-8 only, one short line on any failure.

:func:`read_text` is the one way a user's file becomes text (job specs, site configs and campaign
files go on to hpc.yamlsource). :func:`read_record` reads the JSON records an earlier hpc-tf command
wrote (``resolved.json``, ``submission.json``, hand-off records, the serving endpoint, a campaign's
manifest, the local launcher's jobs): a record edited by hand, cut short or replaced by something
else is reported as damaged, naming the file and what to do, never as a traceback.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from hpc.errors import RecordError
from hpc.text import shown

T = TypeVar("T")

MIB = 1 << 20
RECORD_LIMIT = 64 * MIB  # a campaign manifest of many thousand tasks stays far below it


class NotText(ValueError):
    """A file that is not text hpc-tf reads: what it is, the line where known, and what a user who wrote
    it can do (a record's reader says what to do with a damaged record instead)."""

    def __init__(self, message: str, line: int | None = None, fix: str = "is it the right file?") -> None:
        super().__init__(message)
        self.line = line
        self.fix = fix


def too_large(limit: int) -> NotText:
    size = f"{limit // MIB} MiB" if limit % MIB == 0 else f"{limit} bytes"
    return NotText(f"larger than {size}, the most hpc-tf reads")


class NotYours(ValueError):
    """A file that decides where hpc-tf sends a secret, but that someone else wrote or could have."""


def read_text(path: Path, limit: int, *, owned: bool = False) -> str:
    """The UTF-8 text of ``path`` (a leading byte-order mark dropped).

    NotText when it is not a regular file (a FIFO would block), larger than ``limit`` bytes, not UTF-8
    (UTF-16, binary) or holds a NUL byte; with ``owned``, NotYours unless it is a file of this user's
    that nobody else may write (no symlink followed). OSError (FileNotFoundError, …) as ``open`` raises it.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | (os.O_NOFOLLOW if owned else 0))
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise NotText("not a regular file", fix="is it the right path?")
        if owned and info.st_uid != os.geteuid():
            raise NotYours(f"owned by uid {info.st_uid}, not by you")
        if owned and info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise NotYours(f"writable by others (mode {stat.S_IMODE(info.st_mode):04o})")
        data = fh.read(limit + 1)  # never more: /dev/zero or a huge file must not fill memory
    if len(data) > limit:
        raise too_large(limit)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise NotText("UTF-16 text, not UTF-8", line=1, fix="save it as UTF-8")
    nul = data.find(b"\0")
    if nul >= 0:
        raise NotText(f"not text: a NUL byte at offset {nul}", line=data.count(b"\n", 0, nul) + 1,
                      fix="is it a binary file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise NotText(f"not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})",
                      line=data.count(b"\n", 0, err.start) + 1, fix="save it as UTF-8") from None
    return text.removeprefix("\ufeff")


def _reason(err: Exception) -> str:
    """What is wrong with a record, in a few words."""
    if isinstance(err, NotText):
        return str(err)
    if isinstance(err, json.JSONDecodeError):
        return f"not valid JSON ({err.msg} at line {err.lineno})"
    if isinstance(err, RecursionError):
        return "nested too deeply"
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where + ': ' if where else ''}{str(first['msg']).splitlines()[0]}"
    if isinstance(err, KeyError):
        return f"{shown(err.args[0] if err.args else '')} is missing"
    lines = str(err).splitlines()
    return shown(lines[0]) if lines else type(err).__name__


def read_record(path: Path, what: str, *, fix: str, parse: Callable[[dict[str, Any]], T], owned: bool = False) -> T:
    """``parse`` applied to the JSON object in ``path``.

    FileNotFoundError passes through (callers say what a missing record means); every other failure,
    including a KeyError, TypeError or ValueError from ``parse``, is one RecordError of one line naming
    ``what``, the file, the problem and ``fix`` (what to do). ``owned``: a record that says where hpc-tf
    sends a secret must be this user's alone (see :func:`read_text`).
    """
    try:
        document = json.loads(read_text(path, RECORD_LIMIT, owned=owned))
        if not isinstance(document, dict):
            raise NotText(f"not a JSON object (found {type(document).__name__})")
        return parse(document)
    except FileNotFoundError:
        raise
    except NotYours as err:
        raise RecordError(f"{what} {shown(str(path), 300)} is {err}: hpc-tf does not trust it; {fix}") from None
    except OSError as err:
        raise RecordError(f"cannot read {what} {shown(str(path), 300)}: {err.strerror or err}") from None
    except (ValueError, KeyError, TypeError, RecursionError) as err:  # ValidationError and NotText are ValueErrors
        raise RecordError(f"{what} {shown(str(path), 300)} is damaged ({_reason(err)}); {fix}") from None
