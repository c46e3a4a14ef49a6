"""Several hosts (a TPU pod slice, one JAX process each): the plan from train.hosts and the environment, and
each host's part of the records. The 2-process rehearsal itself is slow (test_pod_rehearsal.py)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from melanoma.errors import ConfigError
from melanoma.image.inputs import equal_steps, eval_records, host_records, host_steps, predict_dataset
from melanoma.data.reader import Shard
from melanoma.runtime.hosts import Host, is_writer, plan_hosts, this_host

JAX_ENV = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:8476", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "2"}


def test_plan_from_train_hosts_and_the_environment():
    assert plan_hosts("auto", {}).count == 1
    assert plan_hosts("auto", {"TPU_PROCESS_ADDRESSES": "local"}).count == 1  # Kaggle's one TPU host
    plan = plan_hosts("auto", JAX_ENV)
    assert (plan.count, plan.coordinator, plan.index) == (4, "10.0.0.1:8476", 2)
    assert plan_hosts(4, JAX_ENV).count == 4
    assert plan_hosts(1, JAX_ENV).count == 1  # hosts=1: this host alone, whatever the environment says
    pod = plan_hosts("auto", {"TPU_WORKER_HOSTNAMES": "t1-w-0,t1-w-1,t1-w-2,t1-w-3"})
    assert (pod.count, pod.coordinator, pod.index) == (4, None, None)  # JAX's TPU detection finds the rest
    assert plan_hosts(2, {}).count == 2


@pytest.mark.parametrize("setting, env, message", [
    (8, JAX_ENV, "train.devices.hosts=8, but JAX_NUM_PROCESSES=4"),
    ("auto", {"JAX_COORDINATOR_ADDRESS": "h:1"}, "without JAX_NUM_PROCESSES and JAX_PROCESS_ID"),
    ("auto", {**JAX_ENV, "JAX_PROCESS_ID": "4"}, "JAX_PROCESS_ID=4 is not in 0..3"),
    ("auto", {**JAX_ENV, "JAX_NUM_PROCESSES": "four"}, "JAX_NUM_PROCESSES='four' is not a whole number"),
])
def test_plan_refuses_settings_that_disagree(setting, env, message):
    with pytest.raises(ConfigError, match=message):
        plan_hosts(setting, env)


def test_one_process_is_the_writer():
    assert is_writer() and this_host() == Host(0, 1)


def _write(path, names):
    with tf.io.TFRecordWriter(str(path)) as w:
        for name in names:
            w.write(name.encode())


def test_hosts_read_disjoint_records_that_add_up_to_all(tmp_path):
    files = []
    for f, n in enumerate((5, 3, 4)):  # 3 files: no whole split over 2 hosts, so record by record
        files.append(str(tmp_path / f"f{f}.tfrec"))
        _write(files[-1], [f"{f}-{i}" for i in range(n)])
    for count in (2, 3):  # 3 hosts: one file each
        parts = [[r.decode() for r in host_records(files, Host(i, count), deterministic=True).as_numpy_iterator()]
                 for i in range(count)]
        flat = [r for p in parts for r in p]
        assert len(flat) == len(set(flat)) == 12


def test_every_host_runs_the_same_padded_steps(tmp_path):
    """7 records over 2 hosts at 2 per host-batch: 4 and 3 records, both run 2 steps; the short host's
    missing rows are idx -1; every record appears once over both hosts."""
    steps = host_steps(7, 2, Host(0, 2))
    assert steps == 2
    ds = tf.data.Dataset.range(3).map(lambda i: {"idx": tf.fill([2], tf.cast(i, tf.int32)),
                                                 "image": tf.zeros([2, 4], tf.uint8)})
    out = list(equal_steps(ds.take(1), 3, {"idx": -1}).as_numpy_iterator())
    assert len(out) == 3 and out[0]["idx"].tolist() == [0, 0] and out[2]["idx"].tolist() == [-1, -1]
    assert out[2]["image"].shape == (2, 4)
    assert equal_steps(ds.take(1), 3, {"idx": -1}).cardinality().numpy() == 3


def test_prediction_batches_cover_every_record_once_over_hosts(records_dir):
    rec, names = records_dir
    shards = [Shard(str(p), "test", -1, 40) for p in sorted(rec.glob("test*.tfrec"))]
    seen, steps = [], set()
    for i in range(2):
        batches = list(predict_dataset(shards, names, 32, None, 16, pad=True, host=Host(i, 2)).as_numpy_iterator())
        steps.add(len(batches))
        seen += [int(x) for b in batches for x in b["idx"] if x >= 0]
    assert steps == {2}  # 20 records each at 16 per batch
    assert sorted(seen) == list(range(len(names)))
    assert len(list(eval_records(shards, Host(1, 2)).as_numpy_iterator())) == 20


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    from helpers.runs import write_learnable_records

    root = tmp_path_factory.mktemp("records")
    _, test_names = write_learnable_records(root)
    return root, np.array([name for name, _ in test_names])


@pytest.mark.parametrize("ending", [
    b"terminate called after throwing an instance of 'gloo::EnforceNotMet'\n  what():  [enforce fail at pair.cc]\n",
    b"E1207 19:24:12.85 32453 coordination_service.cc:1549] error polling: tasks are unhealthy (stopped sending "
    b"heartbeats):\n1\nF1207 19:24:12.85 32453 client.h:80] Terminating process\n*** Check failure stack trace: "
    b"***\n    @     0x7f23fd8a71f5  (unknown)\n",
])
def test_a_lost_host_ends_this_one_with_one_line(ending):
    """JAX ends a process whose peer died from C++ (no Python exception): the stderr watcher makes it one line."""
    import subprocess
    import sys

    from melanoma.runtime.hosts import _WATCHER

    out = subprocess.run([sys.executable, "-c", _WATCHER], input=b"12:00 training\nEpoch 2/3\n" + ending,
                         capture_output=True, check=True).stdout.decode().splitlines()
    assert out[:2] == ["12:00 training", "Epoch 2/3"] and len(out) == 3
    assert out[2].startswith("melanoma: error: another host of this job stopped")
    benign = b"E1207 19:24:12.85 32453 coordination_service.cc:80] a notice\nnext\n"
    assert subprocess.run([sys.executable, "-c", _WATCHER], input=benign, capture_output=True).stdout == benign
