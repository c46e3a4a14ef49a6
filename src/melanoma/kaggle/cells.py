"""What the notebooks' cells call to run a stage: `melanoma("run", "--config", ...)`. Standard library only.

Each command runs in its own process: only one process can hold a TPU, so the notebook's own kernel never
imports JAX (or TensorFlow). Its output streams into the cell as it comes; a non-zero exit status raises
`StageFailed` with the command's one-line error, so a failed stage stops the notebook (and a Kaggle batch
run shows as failed) instead of going on to the next cell.

MELANOMA_NOTEBOOK_SET (for rehearsals only, see scripts/rehearse.py): whitespace-separated KEY=VALUE config
overrides appended as `--set KEY=VALUE` to every command, so one notebook serves the real run and a tiny one.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping

SET_ENV = "MELANOMA_NOTEBOOK_SET"
ERROR_PREFIX = "melanoma: error:"


class StageFailed(RuntimeError):
    """A melanoma command exited with a non-zero status; the message is its one-line error."""


def notebook_sets(environ: Mapping[str, str] | None = None) -> list[str]:
    environ = os.environ if environ is None else environ
    out: list[str] = []
    for item in shlex.split(environ.get(SET_ENV, "")):
        out += ["--set", item]
    return out


def melanoma(*args: object, environ: Mapping[str, str] | None = None) -> None:
    """Run `melanoma ARGS` (with this kernel's Python), streaming its output; raise StageFailed on failure."""
    argv = [sys.executable, "-m", "melanoma", *map(str, args), *notebook_sets(environ)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    error, last = None, None
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.startswith(ERROR_PREFIX):
            error = line.strip()
        if line.strip():
            last = line.strip()
    status = proc.wait()
    if status != 0:
        raise StageFailed(f"`melanoma {' '.join(map(str, args[:1]))}` failed (exit status {status}): "
                          f"{error or last or 'no output'}")
