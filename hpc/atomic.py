"""Writes that are never seen half-done: temp file in the same directory, fsync, rename."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from hpc.errors import HpcTfError
from hpc.text import shown


def write_text_atomic(path: Path, text: str, *, mode: int = 0o644, replace: bool = True) -> None:
    """Replace ``path`` with ``text`` (UTF-8): see :func:`write_bytes_atomic`."""
    write_bytes_atomic(path, text.encode("utf-8"), mode=mode, replace=replace)


def write_bytes_atomic(path: Path, data: bytes, *, mode: int = 0o644, replace: bool = True) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old file or the new one, never a mix.

    ``replace=False``: a new file only; FileExistsError when ``path`` exists, even if it appeared
    meanwhile (a hard link, unlike a rename, never replaces).

    ``mode`` is what the file may get at most: the user's umask takes bits away (umask 077 gives 0600
    run files), except the owner's, which the caller needs (a script stays executable).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)  # the kernel applies the umask
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) | (mode & stat.S_IRWXU))
            os.fsync(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not replace:
        tmp.unlink()


# Why a write failed, for the errors a user can do something about: (what happened, what to do)
_WRITE_FAILURES = {
    errno.ENOSPC: ("no space left on {where}", "free space there or set {setting} to another directory"),
    errno.EDQUOT: ("disk quota exceeded on {where}", "free space there or set {setting} to another directory"),
    errno.EROFS: ("{where} is on a read-only filesystem", "set {setting} to a writable directory"),
    errno.EACCES: ("no permission to write in {where}", "set {setting} to a directory you can write to"),
    errno.EPERM: ("no permission to write in {where}", "set {setting} to a directory you can write to"),
}


def write_failure(err: OSError, directory: Path, setting: str) -> HpcTfError:
    """One line for a write under ``directory`` (chosen by the setting ``setting``) that failed:
    where, why and what to do, e.g. ``no space left on '/scratch/runs' (runs_dir): free space there
    or set runs_dir to another directory``."""
    where = f"{shown(str(directory))} ({setting})"
    cause, fix = _WRITE_FAILURES.get(
        err.errno or 0, (f"cannot write in {{where}}: {err.strerror or err}", "check it or set {setting}")
    )
    return HpcTfError(f"{cause.format(where=where)}: {fix.format(setting=setting)}")
