"""Writing a file so that no reader sees half of it and no planted link is followed.

A low-level module: it imports nothing of tracer, so any layer may use it (metrics writes its
per-process file with it, memory its heap snapshots).
"""

from __future__ import annotations

import os
import secrets

# Random temporary names tried before giving up: a name is taken only when something was
# planted there (or a leftover of a crash), so a few tries are plenty.
RANDOM_TRIES = 8
# A new file, never one that was there: O_EXCL refuses an existing name, a planted link too.
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


def write_atomic(path: str, data: bytes, mode: int, *, tmp: str | None = None) -> None:
    """Replace ``path`` with ``data``: written to a new temporary file in the same folder,
    created with ``mode`` and ``O_EXCL|O_NOFOLLOW``, then renamed over ``path`` (which replaces
    a link there rather than following it).

    Without ``tmp`` the temporary file gets a random name next to ``path``, and another is tried
    when one exists. With ``tmp`` that name is used; one that exists is removed (removing a name
    never follows it) and tried once more, and if it comes back the error stands. The temporary
    file is removed when anything fails. Raises OSError.
    """
    if tmp is None:
        for _ in range(RANDOM_TRIES):
            tmp = f"{path}.{secrets.token_hex(8)}.tmp"
            try:
                fd = os.open(tmp, _FLAGS, mode)
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(f"no new temporary file could be made for {path}")
    else:
        try:
            fd = os.open(tmp, _FLAGS, mode)
        except FileExistsError:
            os.unlink(tmp)
            fd = os.open(tmp, _FLAGS, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
