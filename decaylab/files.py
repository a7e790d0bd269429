"""Writing files safely: atomic writes through a temporary file, with the file mode ``open()`` would give.

Every file of a run directory, a sweep or the data cache that a reader may open while it is being written goes
through ``atomic_write``: the text lands in a temporary file next to its destination and is renamed into place.

File modes: ``tempfile.mkstemp`` (and safetensors) create files readable by their owner only (0600), where
``open()`` gives what the umask allows (0644 by default). A run or cache directory on a shared disk would then hold
files that colleagues cannot read next to files they can; ``as_if_opened`` gives such a file the mode ``open()``
would have.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any thread of ours writes files.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()


def as_if_opened(path: str | Path) -> None:
    """Give ``path`` the permission bits a file created by ``open()`` gets under this process's umask."""
    os.chmod(path, 0o666 & ~UMASK)


def fsync_dir(path: str | Path) -> None:
    """Flush a directory entry (a rename into it) to disk; filesystems that cannot do this are skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it to ``path`` in one step: readers
    see the old file or the new one, never half of one, and a crash leaves no partial file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        as_if_opened(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """``atomic_write`` of a text."""
    atomic_write(path, lambda f: f.write(text), mode="w")
