"""One writer per output folder, and no trace of a refused run.

`prepare` holds `OUT/.prepare.lock` (the writer's process id) while it works: a second `prepare` into the
same folder refuses with one line instead of interleaving shards with the first. A lock whose process is gone
(killed, crashed) is stale and taken over, so an interrupted run can always be resumed. An output folder that
the refused call itself created is removed again when it is still empty, so a refused command leaves nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from melanoma.errors import MelanomaError, input_error

LOCK_NAME = ".prepare.lock"


def _alive(pid: int) -> bool:
    if pid == os.getpid():  # our own earlier call in this process: it has finished
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder(lock: Path) -> int | None:
    try:
        return int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def exclusive(lock: Path, folder: str) -> Iterator[None]:
    """Hold `lock` (created exclusively) for the duration; refuse while a live process holds it."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            pid = _holder(lock)
            if pid is not None and _alive(pid):
                raise input_error(folder, f"another `melanoma prepare` (process {pid}) is writing into this "
                                          "folder: wait for it to finish, or use another --out") from None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)  # stale: its process is gone
    else:
        raise input_error(folder, f"cannot take the lock {lock}: remove it if no prepare is running")
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        yield
    finally:
        if _holder(lock) == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)


@contextlib.contextmanager
def claim_output(out: str, lock: Path) -> Iterator[None]:
    """Create OUT (when local) and hold its lock. When the body refuses (a MelanomaError), an OUT this call
    created is removed again if nothing else is in it."""
    local = "://" not in out
    created = local and not Path(out).exists()
    if local:
        Path(out).mkdir(parents=True, exist_ok=True)
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive(lock, out):
            yield
    except MelanomaError:
        if created:
            with contextlib.suppress(OSError):
                Path(out).rmdir()  # only when empty: never anything a user put there
        raise
