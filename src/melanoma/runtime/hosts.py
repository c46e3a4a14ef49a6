"""Several hosts, one JAX process each (a Cloud TPU pod slice): start them as one job, and say who writes.

On a pod slice every host runs the same `melanoma train` / `melanoma run`; `start_hosts` joins them with
`jax.distributed.initialize` before anything lists the devices, so `jax.devices()` is the global device list
and Keras' DataParallel spans every host. `train.devices.hosts`: auto (several hosts when the environment says so:
`JAX_COORDINATOR_ADDRESS` with `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`, or a TPU runtime listing several
workers in `TPU_WORKER_HOSTNAMES` / `TPU_PROCESS_ADDRESSES`), 1 (one host, nothing started) or N (a pod slice
of N hosts: JAX finds the others from the TPU runtime, or from the JAX_* variables).

Process 0 is the one writer of run files (`is_writer`); the others only log, each line prefixed with their
process index. A host that dies is noticed through the coordination service's heartbeats within
`MELANOMA_HEARTBEAT_SECONDS` (JAX's default 100 s). JAX then ends the others from C++ (an abort with a stack
trace: no Python exception to catch), so `_watch_stderr` passes this process's stderr through a small
watcher that turns that ending into one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from melanoma.errors import ConfigError, EnvironmentProblem

log = logging.getLogger(__name__)

HEARTBEAT_ENV = "MELANOMA_HEARTBEAT_SECONDS"


@dataclass(frozen=True)
class HostPlan:
    count: int  # processes (hosts) in the job; 1 = nothing to start
    coordinator: str | None  # host:port of process 0, None = found by JAX (TPU runtime)
    index: int | None  # this process, None = found by JAX
    why: str


def plan_hosts(setting: int | str, environ: Mapping[str, str] | None = None) -> HostPlan:
    """How many processes the job has and how they find each other, from train.devices.hosts and the environment."""
    env = os.environ if environ is None else environ
    if setting not in ("auto",) and not (isinstance(setting, int) and setting >= 1):
        raise ConfigError(f"train.devices.hosts must be auto or a whole number >= 1, got {setting!r}")
    coordinator = env.get("JAX_COORDINATOR_ADDRESS") or None
    count, index = _int_env(env, "JAX_NUM_PROCESSES"), _int_env(env, "JAX_PROCESS_ID")
    if coordinator and (count is None or index is None):
        raise ConfigError("JAX_COORDINATOR_ADDRESS is set without JAX_NUM_PROCESSES and JAX_PROCESS_ID: set all "
                          "three on every host (process 0's host:port, the host count, this host's index)")
    if setting == 1:
        return HostPlan(1, None, 0, "train.devices.hosts=1")
    if coordinator:
        if setting != "auto" and setting != count:
            raise ConfigError(f"train.devices.hosts={setting}, but JAX_NUM_PROCESSES={count}: make them agree")
        if not 0 <= index < count:
            raise ConfigError(f"JAX_PROCESS_ID={index} is not in 0..{count - 1} (JAX_NUM_PROCESSES={count})")
        return HostPlan(count, coordinator, index, f"JAX_COORDINATOR_ADDRESS={coordinator}")
    workers = [w for w in (env.get("TPU_WORKER_HOSTNAMES") or env.get("TPU_PROCESS_ADDRESSES") or "").split(",")
               if w.strip() and w.strip() != "local"]
    if setting == "auto":
        if len(workers) > 1:
            return HostPlan(len(workers), None, None, f"the TPU runtime lists {len(workers)} workers")
        return HostPlan(1, None, 0, "one host (no JAX_COORDINATOR_ADDRESS, no TPU workers listed)")
    return HostPlan(setting, None, None, f"train.devices.hosts={setting}, the others found by JAX's TPU detection")


def _int_env(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a whole number") from None


def start_hosts(setting: int | str, backend: str, environ: Mapping[str, str] | None = None) -> HostPlan:
    """Join this process to the job before the devices are listed (idempotent). Several hosts need JAX."""
    plan = plan_hosts(setting, environ)
    if plan.count == 1:
        return plan
    if backend != "jax":
        raise ConfigError(f"{plan.why}: several hosts train on the JAX backend only; set train.devices.backend=jax")
    import jax

    if jax.distributed.is_initialized():  # joined already (the CLI does it before a stage calls this)
        return plan
    if plan.index:  # known from the environment: JAX's own connection lines get the prefix too
        _prefix_log_lines(plan.index, plan.count)
    # CPU devices (the local rehearsal) talk through gloo; TPUs use their own interconnect either way.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    heartbeat = _int_env(os.environ if environ is None else environ, HEARTBEAT_ENV) or 100
    _watch_stderr()
    jax.distributed.initialize(plan.coordinator, plan.count, plan.index, heartbeat_timeout_seconds=heartbeat,
                               shutdown_timeout_seconds=max(heartbeat, 10),
                               initialization_timeout=max(3 * heartbeat, 60))
    if jax.process_index() != 0 and plan.index is None:
        _prefix_log_lines(jax.process_index(), jax.process_count())
    if jax.process_count() != plan.count:
        raise ConfigError(f"{plan.why}: expected {plan.count} hosts, JAX joined {jax.process_count()}")
    log.info("hosts: process %d of %d (%s), %d local and %d global devices", jax.process_index(),
             jax.process_count(), plan.why, jax.local_device_count(), jax.device_count())
    return plan


def _prefix_log_lines(index: int, count: int) -> None:
    """Every log line of a non-zero process starts with its index, so pod logs never repeat process 0's."""
    factory = logging.getLogRecordFactory()
    prefix = f"[process {index}/{count}] "

    def record(*args, **kwargs):
        rec = factory(*args, **kwargs)
        rec.msg = prefix + str(rec.msg)
        return rec

    logging.setLogRecordFactory(record)


def process_index() -> int:
    """This process's index in the job (0 without jax.distributed or without JAX at all)."""
    import sys

    jax = sys.modules.get("jax")
    if jax is None or not _distributed(jax):
        return 0
    return jax.process_index()


def process_count() -> int:
    import sys

    jax = sys.modules.get("jax")
    return jax.process_count() if jax is not None and _distributed(jax) else 1


def _distributed(jax) -> bool:
    try:
        return jax.distributed.is_initialized()
    except AttributeError:
        return False


def is_writer() -> bool:
    """Whether this process writes run files: process 0 only."""
    return process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process got here (files process 0 wrote are then there for the others to read)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree(value: int) -> int:
    """Process 0's value of a small integer, on every process (a decision all must take together)."""
    if process_count() == 1:
        return value
    import numpy as np
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.asarray(value, np.int32)))


@dataclass(frozen=True)
class Host:
    """This process's place in the job: what a per-host input pipeline needs."""
    index: int = 0
    count: int = 1


def this_host() -> Host:
    return Host(process_index(), process_count())


class HostLost(EnvironmentProblem):
    """Another host of the job stopped (killed, crashed, preempted): this one cannot go on alone."""


# What JAX's collectives and coordination service say when a peer has gone (gloo on CPUs, ICI/DCN on TPUs).
LOST_PEER_SIGNS = ("gloo", "connection", "heartbeat", "coordination", "unavailable", "deadline_exceeded",
                   "barrier", "peer", "socket", "task", "distributed")


@contextlib.contextmanager
def host_failures() -> Iterator[None]:
    """On several hosts, a step or barrier that fails because another host went away becomes one line saying
    so and how to go on (the run folder keeps the last completed epoch's backup)."""
    try:
        yield
    except Exception as e:
        count = process_count()
        text = f"{type(e).__name__}: {e}".lower()
        if count == 1 or isinstance(e, (EnvironmentProblem, ConfigError)) \
                or not any(sign in text for sign in LOST_PEER_SIGNS):
            raise
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise HostLost(f"process {process_index()} of {count}: another host of the job stopped ({first}); "
                       "restart the same command on every host to resume from the last completed epoch") from None


# What begins the end of a job whose host died: the coordination service's own log lines (absl: severity,
# date, time, thread, file:line]) after missed heartbeats, or gloo's abort on a torn transfer (CPU devices);
# the watcher swallows them and what follows, and says it in one line.
_WATCHER = r"""
import os, re, sys
start = re.compile(rb"^([EF]\d{4} [\d:.]+ +\d+ (coordination_service(_agent)?\.cc|client\.h):\d+\]"
                   rb"|terminate called after throwing an instance of 'gloo::)")
signs = (b"heartbeat", b"unhealthy", b"Terminating process", b"gloo")
out, held = sys.stdout.buffer, []
for line in iter(sys.stdin.buffer.readline, b""):
    if held or start.match(line):
        held.append(line)
        continue
    out.write(line)
    out.flush()
text = b"".join(held)
if held and any(s in text for s in signs):
    out.write(b"melanoma: error: another host of this job stopped (killed, crashed or preempted: JAX lost it in a "
              b"collective or by its heartbeats), so this one stopped too; run the same command again on every "
              b"host to resume from the last completed epoch\n")
else:
    out.write(text)
out.flush()
"""


def _watch_stderr() -> None:
    """Route this process's stderr (fd 2: Python's logs and JAX's C++ logs alike) through the watcher."""
    import atexit
    import subprocess
    import sys

    sys.stderr.flush()
    original = os.dup(2)
    try:
        watcher = subprocess.Popen([sys.executable, "-c", _WATCHER], stdin=subprocess.PIPE, stdout=original)
    except OSError as e:  # without it the pod still works; a lost host then ends with JAX's own message
        log.warning("hosts: no stderr watcher (%s): a lost host will end this one with JAX's own message", e)
        return
    os.dup2(watcher.stdin.fileno(), 2)

    def finish():  # a normal exit: let the watcher write what it holds before this process ends
        sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last writer closes: the watcher reads its end
        watcher.stdin.close()
        watcher.wait(timeout=10)

    atexit.register(finish)

