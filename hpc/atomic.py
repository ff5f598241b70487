"""Writes that are never seen half-done: temp file in the same directory, fsync, rename."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


def write_text_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` so a reader sees the old file or the new one, never a mix.

    ``mode`` is what the file may get at most: the user's umask takes bits away (umask 077 gives 0600
    run files), except the owner's, which the caller needs (a script stays executable).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)  # the kernel applies the umask
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) | (mode & stat.S_IRWXU))
            os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
