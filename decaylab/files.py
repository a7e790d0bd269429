"""File modes for files written through a temporary file.

``tempfile.mkstemp`` (and safetensors) create files readable by their owner only (0600), where ``open()`` gives
what the umask allows (0644 by default). A run or cache directory on a shared disk would then hold files that
colleagues cannot read next to files they can; ``as_if_opened`` gives such a file the mode ``open()`` would have.
"""

from __future__ import annotations

import os
from pathlib import Path


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any thread of ours writes files.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()


def as_if_opened(path: str | Path) -> None:
    """Give ``path`` the permission bits a file created by ``open()`` gets under this process's umask."""
    os.chmod(path, 0o666 & ~UMASK)
