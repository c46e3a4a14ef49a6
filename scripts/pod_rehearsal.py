"""Rehearse a pod slice on one machine: 2 JAX processes x 4 CPU devices train like 1 process x 8 devices.

    python scripts/pod_rehearsal.py --tfrecords RECORDS --out OUT [--set key=value ...] [--kill-after S]

Starts `melanoma train` twice as one 2-host job (a localhost coordinator, JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID; the CPU devices talk through gloo) into OUT/pod, then once as one process
with 8 CPU devices into OUT/one, and compares: the same run files, every image predicted exactly once, and
OOF predictions equal within --tolerance. Training with a learning rate of ~0 and frozen BatchNorm statistics
(--frozen, the default) makes both runs hold the initial weights, so the comparison checks the per-host
input, padding, gathering and the single writer exactly; with --no-frozen the runs train for real and differ
by their (per-host, shuffled) batches, so only the files and the ids are compared.

--kill-after-epochs E kills process 1 once fold 0 has E finished epochs (their backup written) and reports how
process 0 ended; --pod-only runs the 2-process job alone (a resumed run, say) and compares nothing.
Prints one JSON line with what it found; exit status 0 when everything matched.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

FROZEN = ["--set", "train.optimizer.lr_max_per_image=1e-12", "--set", "train.optimizer.lr_min=0",
          "--set", "train.bn_momentum=0.999999"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def train_command(rec: str, out: Path, devices: int, hosts: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "melanoma", "train", "--tfrecords", rec, "--out", str(out),
            "--set", "train.devices.backend=jax", "--set", f"train.devices.cpu_replicas={devices}",
            "--set", f"train.devices.hosts={hosts}", "--set", "train.checkpoints.tensorboard=false", *extra]


def env_for(index: int | None, port: int, heartbeat: int) -> dict[str, str]:
    # Without the caller's backend choice (a test process that ran the CLI has KERAS_BACKEND set) or XLA flags:
    # these runs say train.devices.backend=jax and their device counts themselves.
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0",
                "MELANOMA_HEARTBEAT_SECONDS": str(heartbeat)})
    if index is not None:
        env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(index))
    return env


def epochs_backed_up(out: Path) -> int:
    """Finished epochs of fold 0 whose backup is written (BackupAndRestore's metadata: the epoch to resume at)."""
    meta = out / "fold0" / "backup" / "training_metadata.json"
    try:
        return int(json.loads(meta.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def run_pod(rec: str, out: Path, extra: list[str], heartbeat: int, timeout: float,
            kill_after_epochs: int | None = None) -> list[dict]:
    """Both processes of the 2-host job; with kill_after_epochs, process 1 is killed once fold 0 has that
    many epochs backed up. Each process: rc, seconds, seconds after the kill, log."""
    port, logs = free_port(), []
    procs = []
    for i in range(2):
        log = open(out.parent / f"{out.name}.process{i}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen(train_command(rec, out, 4, 2, extra), env=env_for(i, port, heartbeat),
                                      stdout=log, stderr=subprocess.STDOUT))
    start = time.monotonic()
    killed_at = None
    if kill_after_epochs is not None:
        while epochs_backed_up(out) < kill_after_epochs and procs[1].poll() is None \
                and time.monotonic() - start < timeout:
            time.sleep(0.5)
        procs[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
    results = []
    for i, p in enumerate(procs):
        try:
            p.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        ended = time.monotonic()
        time.sleep(2)  # its stderr watcher (melanoma.runtime.hosts) may still be writing the last line
        logs[i].close()
        results.append({"rc": p.returncode, "seconds": round(ended - start, 1),
                        "after_kill": round(ended - killed_at, 1) if killed_at else None,
                        "log": Path(logs[i].name).read_text()})
    return results


def run_one(rec: str, out: Path, extra: list[str], timeout: float) -> dict:
    with open(out.parent / f"{out.name}.log", "w") as log:
        p = subprocess.run(train_command(rec, out, 8, 1, extra), env=env_for(None, 0, 100), stdout=log,
                           stderr=subprocess.STDOUT, timeout=timeout)
    return {"rc": p.returncode, "log": (out.parent / f"{out.name}.log").read_text()}


def run_files(out: Path) -> list[str]:
    """The run's files, relative, without the per-run info whose content names the run (hosts, devices)."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def compare(pod: Path, one: Path, tolerance: float | None) -> dict:
    found = {"files_pod": run_files(pod), "files_one": run_files(one)}
    found["same_files"] = found["files_pod"] == found["files_one"]
    a, b = pd.read_csv(pod / "oof.csv"), pd.read_csv(one / "oof.csv")
    found["oof_rows"], found["oof_unique_ids"] = len(a), int(a["image_name"].nunique())
    found["once"] = len(a) == a["image_name"].nunique() and set(a["image_name"]) == set(b["image_name"])
    joined = a.merge(b, on="image_name", suffixes=("_pod", "_one"))
    found["max_oof_difference"] = float(np.abs(joined["pred_pod"] - joined["pred_one"]).max())
    ta, tb = pd.read_csv(pod / "test_pred.csv"), pd.read_csv(one / "test_pred.csv")
    tj = ta.merge(tb, on="image_name", suffixes=("_pod", "_one"))
    found["test_once"] = len(ta) == ta["image_name"].nunique() == len(tb) == len(tj)
    found["max_test_difference"] = float(np.abs(tj["target_pod"] - tj["target_one"]).max())
    found["ok"] = bool(found["same_files"] and found["once"] and found["test_once"] and (
        tolerance is None or max(found["max_oof_difference"], found["max_test_difference"]) <= tolerance))
    return found


def last_lines(log: str) -> list[str]:
    """The log's last line, and the line before it when that is also an error's (one line expected)."""
    lines = [ln for ln in log.strip().splitlines() if not ln.startswith("[Gloo]")]
    return [ln for ln in lines[-2:] if ln.startswith("melanoma:") or ln is lines[-1]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tfrecords", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    ap.add_argument("--frozen", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--heartbeat", type=int, default=10, help="seconds before a lost process is noticed")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--kill-after-epochs", type=int, default=None)
    ap.add_argument("--pod-only", action="store_true")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    extra = [x for kv in args.overrides for x in ("--set", kv)] + (FROZEN if args.frozen else [])
    pod = run_pod(args.tfrecords, args.out / "pod", extra, args.heartbeat, args.timeout, args.kill_after_epochs)
    found = {"pod_rc": [r["rc"] for r in pod], "pod_seconds": [r["seconds"] for r in pod],
             "after_kill": [r["after_kill"] for r in pod], "last_lines": [last_lines(r["log"]) for r in pod]}
    if args.kill_after_epochs is not None or args.pod_only or any(r["rc"] != 0 for r in pod):
        ok = args.pod_only and all(r["rc"] == 0 for r in pod)
        print(json.dumps({**found, "ok": ok}))
        return 0 if ok else 1
    one = run_one(args.tfrecords, args.out / "one", extra, args.timeout)
    if one["rc"] != 0:
        print(json.dumps({**found, "one_rc": one["rc"], "one_tail": one["log"][-2000:], "ok": False}))
        return 1
    found.update(compare(args.out / "pod", args.out / "one", args.tolerance if args.frozen else None))
    print(json.dumps(found))
    return 0 if found["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
