"""Atomic file writes (temp file in the same folder, fsync, rename) and safe appends.

A crash at any moment leaves either the old file or the new one, never a
half-written file; an append that fails (a full disk) is cut back off, so a
JSONL file never keeps half a line in its middle. A failed write raises an
OSError of the same type and errno whose message names the file and says
what to do (the command line prints OSError messages as they are).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


def write_error(exc: OSError, path: Path, doing: str = "write") -> OSError:
    """`exc` again (same type and errno), its message naming `path` and what to do."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in _FULL:
        hint = "; free some disk space (or use another directory) and run again"
    elif isinstance(exc, PermissionError):
        hint = "; check the permissions of the file and its directory"
    else:
        hint = ""
    message = f"{reason}: could not {doing} {path}{hint}"
    try:
        error = type(exc)(exc.errno, message) if exc.errno is not None else type(exc)(message)
    except Exception:  # a subclass with another constructor
        error = OSError(exc.errno, message) if exc.errno is not None else OSError(message)
    return error


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise write_error(exc, target) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(exc, target) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise write_error(exc, target, "sync the directory of") from exc
    return target


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append `line` plus a newline and fsync; on failure the file is cut back to its old
    size (no partial line stays) and the error names the file."""
    target = Path(path)
    data = (line + "\n").encode("utf-8")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise write_error(exc, target, "append to") from exc
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise write_error(exc, target, "append to") from exc
    finally:
        os.close(fd)
