"""Writing a file so that no reader sees half of it and no planted link is followed.

A low-level module: it imports nothing of tracer, so any layer may use it (metrics writes its
per-process file with it, memory its heap snapshots, the profiler its profiles, in the private
folders :func:`own_folder` checks).
"""

from __future__ import annotations

import os
import re
import secrets
import stat

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


class UnsafeFolder(PermissionError):
    """A folder tracer writes to is not this user's own and private: another user could read
    what is written there or plant links and files in it."""


def own_folder(folder: str, default: bool, label: str, option: str) -> None:
    """Create ``folder`` (0700) or check the one there: it must belong to this process's user
    and be writable by nobody else; the default one, in a temporary directory every user can
    write, must also be a real folder (not a link) that nobody else can read. Raises
    :class:`UnsafeFolder` naming ``label`` (``"heap snapshot"``) and ``option``, the option
    that sets another folder."""
    if default:
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        info = os.lstat(folder)
    else:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.stat(folder)
    mode = stat.S_IMODE(info.st_mode)
    euid = os.geteuid() if hasattr(os, "geteuid") else None
    problem = None
    if stat.S_ISLNK(info.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory"
    elif euid is not None and info.st_uid != euid:
        problem = f"belongs to uid {info.st_uid}, not to this process's user (uid {euid})"
    elif mode & (0o077 if default else 0o022):
        problem = f"has mode {mode:04o}: other users can {'use' if default else 'write'} it"
    if problem is not None:
        things = label.rpartition(" ")[2] + "s"
        raise UnsafeFolder(
            f"{label} folder {folder} {problem}; {things} are not written there (set"
            f" {option} to a folder of this user's that only it can write)"
        )


def safe_name(service: str) -> str:
    """``service`` as a part of a file name: letters, digits, ``._-``, at most 80 characters."""
    return (re.sub(r"[^A-Za-z0-9._-]", "_", service).strip(".") or "python")[:80]
