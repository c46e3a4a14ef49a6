"""The device check: images/s on whatever accelerator is here, every figure the TPU/GPU path needs, in one run.

    bench/device.sh              # on a GPU or TPU machine: under 8 minutes (--budget)
    bench/device.sh --dry-run    # the same code on the CPU at 32 px, a few steps (a test runs it)

For each model (EfficientNetB0 at 256 px, B5 at 384 px) and each Keras backend (TensorFlow with mixed_float16
on a GPU; JAX with bfloat16), each backend in a process of its own, from synthetic TFRecords it writes first:
  train, augmentation in tf.data (augment.where: data): images/s of fit, the default augmentation on the host;
  train, augmentation in the model (augment.where: model): images/s of fit, the augmentation on the device;
  TTA inference: images/s of the prediction model with the Kaggle TPU config's views (plain, 3 flips, 8 random),
      all made on the device; each image counts once (views/s = images/s x views).
Batches are uint8 (pipeline.train_dataset), models and compile settings as `melanoma train` makes them
(AdamW, the default loss, AUC, XLA as train.devices.jit_compile says, steps_per_execution), and on JAX with several
devices the batches go through DataParallel and the device prefetch, as in training. Each figure is timed after
warm-up steps that include the compile (reported apart). It prints a table, then the rows for bench/RESULTS.md.

It installs nothing. It runs in the Python that bench/device.sh picked (the project's .venv when present, else
python3) with the project's `src` on the path, and stops with one line naming what is missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("numpy", "pandas", "yaml", "PIL", "tensorflow", "keras", "h5py", "tqdm", "sklearn")
DRY_MODELS = "simple_cnn:32:4"  # the dry run's stand-in: the same code, seconds instead of minutes
MODELS = "efficientnet_b0:256:64,efficientnet_b5:384:32"  # name:size:batch per device


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, 32 px, a few steps: checks the code, not the speed")
    p.add_argument("--models", help=f"name:size:batch-per-device,... (default {MODELS}; dry run {DRY_MODELS})")
    p.add_argument("--backends", default="tensorflow,jax")
    p.add_argument("--budget", type=float, default=450.0, help="seconds for everything; figures past it are skipped")
    p.add_argument("--steps", type=int, help="timed training steps (default 24; dry run 2)")
    p.add_argument("--images", type=int, help="images in each size's records (default 512; dry run 32)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--worker", choices=["tensorflow", "jax"], help=argparse.SUPPRESS)
    p.add_argument("--records", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.models = args.models or (DRY_MODELS if args.dry_run else MODELS)
    args.steps = args.steps or (2 if args.dry_run else 24)
    args.images = args.images or (32 if args.dry_run else 512)
    return args


def missing_modules(python: str, modules: tuple[str, ...]) -> list[str]:
    """The modules `python` cannot find (without importing them)."""
    code = ("import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] "
            "if importlib.util.find_spec(m) is None))")
    res = subprocess.run([python, "-c", code, *modules], capture_output=True, text=True)
    return res.stdout.split() if res.returncode == 0 else list(modules)


def models_of(spec: str) -> list[tuple[str, int, int]]:
    out = []
    for item in spec.split(","):
        name, size, batch = item.split(":")
        out.append((name, int(size), int(batch)))
    return out


# ---------------------------------------------------------------- worker: one backend, in its own process

def worker(args) -> None:
    """Print one JSON line per figure ("RESULT {...}"), in the order of the table."""
    import keras
    import numpy as np

    from melanoma.config import AugmentConfig, TrainConfig, to_dict
    from melanoma.runtime.machine import framework_versions
    from melanoma.runtime.devices import setup_devices
    from melanoma.image.models import build_model
    from melanoma.image.inputs import predict_dataset, train_dataset
    from melanoma.data.reader import find_shards, read_index
    from melanoma.image.prefetch import DevicePrefetch, wanted as prefetch_wanted
    from melanoma.image.schedules import make_loss
    from melanoma.image.train import dtype_policy, jit_compile
    from melanoma.image.tta import prediction_views, tta_model, views_batch

    backend = args.worker
    devices = setup_devices("auto", cpu_replicas=2 if args.dry_run and backend == "jax" else 1)
    kind = devices.kind
    if kind == "cpu" and not args.dry_run:
        raise SystemExit(f"{backend} in {sys.executable} sees no accelerator (a CPU-only build such as "
                         f"tensorflow-cpu or jax without CUDA/TPU support?): nothing to measure on this backend")
    precision = ("float32" if kind == "cpu" else "mixed_bfloat16" if backend == "jax" or kind == "tpu"
                 else "mixed_float16")
    spe = 1 if args.dry_run else 8
    warm = spe if not args.dry_run else 1
    steps = max(spe, args.steps // spe * spe)
    versions = {k: v for k, v in framework_versions().items() if v and k in ("keras", "tensorflow", "tensorflow-cpu",
                                                                                "jax", "jaxlib", "libtpu")}
    emit({"kind": "device", "backend": backend, "device": kind, "detail": devices.detail, "precision": precision,
          "versions": versions, "python": platform.python_version()})

    def timed_fit(model, ds, batch: int) -> tuple[float, float]:
        """(images/s over `steps` steps, seconds of the first `warm` steps: the compile)."""
        marks = {}

        class Mark(keras.callbacks.Callback):
            def on_train_batch_end(self, step, logs=None):
                if step + 1 in (warm, warm + steps):
                    float(keras.ops.convert_to_numpy(logs["loss"]))  # waits for the device
                    marks[step + 1] = time.perf_counter()

        ahead = DevicePrefetch(ds) if prefetch_wanted(backend) else None
        start = time.perf_counter()
        try:
            model.fit(ahead.batches() if ahead else ds, epochs=1, steps_per_epoch=warm + steps, verbose=0,
                      shuffle=False, callbacks=[Mark()])
        finally:
            if ahead is not None:
                ahead.close()
        return steps * batch / (marks[warm + steps] - marks[warm]), marks[warm] - start

    for name, size, per_device in models_of(args.models):
        shardset = find_shards(str(args.records / str(size)), 1)
        shards = shardset.train()
        batch = per_device * devices.count
        # the Kaggle TPU config's views: plain, 3 flips, 8 random (the dry run: 1 random, a smaller graph)
        tcfg = TrainConfig(model=name, size=size, batch_size=per_device, tta=1 if args.dry_run else 8,
                           tta_flips=True, weights="none", cache=True)
        row = {"kind": "figure", "backend": backend, "model": name, "size": size, "batch": batch}
        model = None
        for where in ("data", "model"):
            if time.time() > args.deadline:
                emit({**row, "measure": f"train_{where}", "skipped": "time budget"})
                continue
            keras.backend.clear_session()
            with devices.scope(), dtype_policy(precision):
                model = build_model(name, size, None, tcfg.dropout,
                                    augment=to_dict(tcfg.augment) if where == "model" else None)
                model.compile(optimizer=keras.optimizers.AdamW(1e-4, weight_decay=tcfg.optimizer.weight_decay),
                              loss=make_loss(tcfg), metrics=[keras.metrics.AUC(name="auc")],
                              steps_per_execution=spe, jit_compile=jit_compile(None, kind, backend))
            ds = train_dataset(shards, tcfg, shardset.image_size, batch, None, 0, augment=where == "data")
            rate, compile_s = timed_fit(model, ds, batch)
            emit({**row, "measure": f"train_{where}", "img_s": round(rate, 1), "first_steps_s": round(compile_s, 1)})
        if time.time() > args.deadline:
            emit({**row, "measure": "tta", "skipped": "time budget"})
            continue
        with devices.scope(), dtype_policy(precision):
            if model is None:  # both training figures were skipped
                model = build_model(name, size, None, tcfg.dropout)
            tm = tta_model(model, tcfg, seed=0)  # the last model: its augmentation layer is off at inference
        n_views = len(prediction_views(tcfg))
        pbatch = views_batch(per_device, devices.count, n_views)
        names = read_index(shards)["image_name"].to_numpy()
        ds = predict_dataset(shards, names, size, shardset.image_size, pbatch, pad=devices.count > 1)
        t = time.perf_counter()
        tm.predict(ds.take(2), verbose=0)  # compiles
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        out = tm.predict(ds, verbose=0)
        seconds = time.perf_counter() - t
        images = int((np.asarray(out["idx"]) >= 0).sum())
        emit({**row, "measure": "tta", "batch": pbatch, "views": n_views, "img_s": round(images / seconds, 1),
              "views_s": round(images * n_views / seconds, 1), "first_steps_s": round(compile_s, 1)})


def emit(obj: dict) -> None:
    print("RESULT " + json.dumps(obj), flush=True)


# ---------------------------------------------------------------- orchestration

def make_records(python: str, folder: Path, sizes: list[int], images: int) -> None:
    code = (f"import sys; sys.path[:0] = [{str(ROOT / 'src')!r}, {str(ROOT / 'bench')!r}]\n"
            "from pathlib import Path\n"
            "import importlib.util\n"
            f"spec = importlib.util.spec_from_file_location('bench_input', {str(ROOT / 'bench' / 'input.py')!r})\n"
            "m = importlib.util.module_from_spec(spec); sys.modules['bench_input'] = m; spec.loader.exec_module(m)\n"
            f"for size in {sizes!r}:\n"
            f"    d = Path({str(folder)!r}) / str(size); d.mkdir()\n"
            f"    m.write_records(d, {images}, size, 8)\n")
    res = subprocess.run([python, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
    if res.returncode != 0:
        raise SystemExit(f"device.sh: error: could not write the benchmark records: {res.stderr.strip()[-400:]}")


def run_backend(python: str, backend: str, args, records: Path, deadline: float) -> list[dict]:
    """The worker's figures; a crash or a time-out keeps what it printed and says why."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    if args.dry_run:
        env.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu",
                   XLA_FLAGS=(env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip())
    argv = [python, str(Path(__file__).resolve()), "--worker", backend, "--records", str(records),
            "--models", args.models, "--steps", str(args.steps), "--deadline", str(deadline)]
    argv += ["--dry-run"] if args.dry_run else []
    results, why = [], None
    try:
        res = subprocess.run(argv, capture_output=True, text=True, env=env,
                             timeout=max(10.0, deadline - time.time() + 60))
        out, err, code = res.stdout, res.stderr, res.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err, code, why = "", 0, "stopped at the time budget"
    for line in out.splitlines():
        if line.startswith("RESULT "):
            results.append(json.loads(line[7:]))
            print(f"  {backend}: {summary(results[-1])}", flush=True)
    if code != 0:
        last = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or ["(no message)"]
        why = f"failed (exit {code}): {last[0][:300]}"
    if why:
        print(f"  {backend}: {why}", flush=True)
        results.append({"kind": "error", "backend": backend, "why": why})
    return results


def summary(r: dict) -> str:
    if r["kind"] == "device":
        return f"{r['detail']}, {r['precision']}, " + ", ".join(f"{k} {v}" for k, v in r["versions"].items())
    if "skipped" in r:
        return f"{r['model']}@{r['size']} {r['measure']}: skipped ({r['skipped']})"
    return f"{r['model']}@{r['size']} {r['measure']}: {r['img_s']} img/s (first steps {r['first_steps_s']} s)"


def device_name() -> str:
    if shutil.which("nvidia-smi"):
        res = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True)
        if res.returncode == 0 and res.stdout.strip():
            names = res.stdout.strip().splitlines()
            return f"{len(names)} x {names[0]}"
    if os.environ.get("TPU_ACCELERATOR_TYPE"):
        return f"TPU {os.environ['TPU_ACCELERATOR_TYPE']}"
    return f"CPU only ({os.cpu_count()} cores)"


def table(results: list[dict], device: str, dry: bool) -> list[str]:
    """The figures by backend and model, then the bench/RESULTS.md rows."""
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    devs = {r["backend"]: r for r in results if r["kind"] == "device"}
    figs: dict[tuple, dict] = {}
    for r in results:
        if r["kind"] == "figure":
            figs.setdefault((r["backend"], r["model"], r["size"]), {})[r["measure"]] = r
    lines = []
    for (backend, model, size), f in figs.items():
        d = devs.get(backend, {})
        cell = {}
        for m in ("train_data", "train_model", "tta"):
            r = f.get(m)
            cell[m] = "-" if r is None else f"skipped ({r['skipped']})" if "skipped" in r else f"{r['img_s']:g}"
        tta = f.get("tta", {})
        views = f" ({tta['views']} views, {tta['views_s']:g} views/s)" if "views_s" in tta else ""
        first = "/".join(f"{f[m]['first_steps_s']:g}" for m in ("train_data", "train_model", "tta")
                         if m in f and "first_steps_s" in f[m])
        versions = ", ".join(f"{k} {v}" for k, v in d.get("versions", {}).items())
        lines.append(f"| {date} | {device} | {backend}, "
                     f"{d.get('precision', '?')}, {d.get('detail', '?')} | {model} @ {size} | "
                     f"{f.get('train_data', f.get('train_model', {})).get('batch', '?')} | {cell['train_data']} | "
                     f"{cell['train_model']} | {cell['tta']}{views} | {first} | {versions} |")
    return lines


HEADER = ("| date (UTC) | device | backend, precision, devices | model @ px | global batch | train img/s, "
          "augmentation in tf.data | train img/s, augmentation in the model | TTA img/s | first steps s "
          "(data/model/TTA, compile included) | versions |\n|---|---|---|---|---|---|---|---|---|---|")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    start = time.time()
    python = sys.executable
    lacking = missing_modules(python, NEEDED)
    if lacking:
        print(f"device.sh: error: {python} lacks {', '.join(lacking)}: use the project's .venv (make install) or "
              "a Python with the project's dependencies (pip install -e '.[cpu,jax]' or the machine's frameworks)",
              file=sys.stderr)
        return 2
    backends = [b for b in args.backends.split(",") if b]
    for backend in backends:
        need = ("jax",) if backend == "jax" else ()
        lacking = missing_modules(python, need)
        if lacking:
            print(f"device.sh: error: {python} lacks {', '.join(lacking)} for the {backend} backend (add "
                  f"--backends {','.join(b for b in backends if b != backend) or 'tensorflow'} to leave it out)",
                  file=sys.stderr)
            return 2
    device = "CPU (dry run: a code check, not a speed)" if args.dry_run else device_name()
    print(f"bench/device.py: {device}, python {platform.python_version()} ({python}), "
          f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, budget {args.budget:.0f} s", flush=True)
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-device-") as tmp:
        sizes = sorted({size for _, size, _ in models_of(args.models)})
        make_records(python, Path(tmp), sizes, args.images)
        print(f"records: {args.images} synthetic JPEGs at {sizes} px ({time.time() - start:.0f} s)", flush=True)
        for i, backend in enumerate(backends):
            left = args.budget - (time.time() - start)
            deadline = time.time() + left / (len(backends) - i) - 30  # the rest of this backend's share
            results += run_backend(python, backend, args, Path(tmp), deadline)
    rows = table(results, device, args.dry_run)
    print(f"\nbench/RESULTS.md rows ({time.time() - start:.0f} s in all):\n{HEADER}")
    print("\n".join(rows))
    if args.json:
        args.json.write_text(json.dumps({"device": device, "results": results}, indent=2))
    errors = [r for r in results if r["kind"] == "error"]
    return 1 if errors or not rows else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
