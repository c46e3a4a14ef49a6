"""Benchmark of `prepare`: throughput against a plain reference writer, and memory at N and 4N images.

    .venv/bin/python bench/prepare.py [--n 2000] [--size 1024x768] [--out-size 256] [--record]

Generates N synthetic dermoscopy-like JPEGs (smooth skin tone, a dark irregular lesion, noise) in the
competition layout, then runs, each in a fresh subprocess so imports and memory do not carry over:
  - ours, 1 worker, on N images
  - ours, all cores, on N images
  - the plain reference: one process, one image after another (PIL open, Lanczos resize of the full decode,
    JPEG encode, tf.train.Example, tf.io.TFRecordWriter)
  - ours, all cores, on 4N images (the N files hard-linked under 4N names: same decode work per image)
Throughput is images / seconds of the stage itself (interpreter and TensorFlow import excluded, worker start-up
included). Peak RSS is the largest sum of the resident memory of the process and all its children (the
workers), sampled from /proc every 20 ms. `--record` appends the results to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def synthetic_image(rng: np.random.Generator, w: int, h: int, noise: np.ndarray) -> Image.Image:
    """Skin-toned background with vignetting and blotches, a dark irregular lesion, sensor noise.

    Drawn at quarter resolution and upsampled (fast), then full-resolution noise from a shared tile at a random
    offset, so the JPEG carries real high-frequency content like a photograph.
    """
    sw, sh = max(8, w // 4), max(8, h // 4)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    cx, cy = sw * rng.uniform(0.35, 0.65), sh * rng.uniform(0.35, 0.65)
    r = np.hypot((xx - cx) / sw, (yy - cy) / sh)
    angle = np.arctan2(yy - cy, xx - cx)
    radius = rng.uniform(0.12, 0.25) * (1 + 0.15 * np.sin(angle * rng.integers(3, 7) + rng.uniform(0, 6)))
    lesion = 1 / (1 + np.exp((r - radius) * 60))
    base = np.array([rng.uniform(180, 230), rng.uniform(130, 170), rng.uniform(110, 150)], np.float32)
    dark = np.array([rng.uniform(60, 110), rng.uniform(40, 70), rng.uniform(30, 60)], np.float32)
    vignette = 1 - 0.5 * np.clip(np.hypot(xx / sw - 0.5, yy / sh - 0.5) * 1.6, 0, 1) ** 2
    img = (base * (1 - lesion[..., None]) + dark * lesion[..., None]) * vignette[..., None]
    blotch = Image.fromarray(rng.uniform(0, 255, (6, 8)).astype(np.uint8)).resize((sw, sh), Image.Resampling.BICUBIC)
    img += (np.asarray(blotch, np.float32)[..., None] - 128) * 0.35
    big = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    oy, ox = rng.integers(0, noise.shape[0] - h + 1), rng.integers(0, noise.shape[1] - w + 1)
    arr = np.asarray(big, np.int16) + noise[oy:oy + h, ox:ox + w]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_data(root: Path, n: int, w: int, h: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 6, (h + 64, w + 64, 3)).astype(np.int16)
    n_test = max(1, n // 10)
    names = [f"ISIC_{i:07d}" for i in range(n)]
    for split, part in (("train", names[n_test:]), ("test", names[:n_test])):
        (root / "jpeg" / split).mkdir(parents=True, exist_ok=True)
        for name in part:
            synthetic_image(rng, w, h, noise).save(root / "jpeg" / split / f"{name}.jpg", quality=90)
    n_pat = max(10, (n - n_test) // 12)
    _write_csvs(root, names[n_test:], names[:n_test], [f"IP_{rng.integers(n_pat):06d}" for _ in names[n_test:]],
                rng)
    return root


def _write_csvs(root: Path, train: list[str], test: list[str], patients: list[str], rng: np.random.Generator
                ) -> None:
    target = (rng.random(len(train)) < 0.05).astype(int)
    target[:2] = 1
    pd.DataFrame({"image_name": train, "patient_id": patients,
                  "sex": rng.choice(["male", "female"], len(train)), "age_approx": rng.integers(4, 18, len(train)) * 5,
                  "anatom_site_general_challenge": "torso", "diagnosis": "unknown", "target": target}
                 ).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image_name": test, "patient_id": [f"IPT_{i:06d}" for i in range(len(test))]}
                 ).to_csv(root / "test.csv", index=False)


def replicate(src: Path, dst: Path, times: int) -> Path:
    """The same images under `times` x as many names (hard links: no extra disk, same decode work)."""
    rng = np.random.default_rng(1)
    names, patients = {}, []
    for split in ("train", "test"):
        (dst / "jpeg" / split).mkdir(parents=True, exist_ok=True)
        df = pd.read_csv(src / f"{split}.csv")
        names[split] = []
        for k in range(times):
            for name, patient in zip(df.image_name, df.patient_id):
                new = f"{name}_{k}"
                os.link(src / "jpeg" / split / f"{name}.jpg", dst / "jpeg" / split / f"{new}.jpg")
                names[split].append(new)
                if split == "train":
                    patients.append(patient)  # a copy stays with its original's patient (and so its fold)
    _write_csvs(dst, names["train"], names["test"], patients, rng)
    return dst


# ---------------------------------------------------------------- measured runs (in subprocesses)

OURS = """
import json, logging, sys, time
logging.disable(logging.INFO)
import tensorflow
from melanoma.config import Config, apply_overrides
from melanoma.data.prepare import prepare
cfg = apply_overrides(Config(), {{"prepare.size": {size}, "prepare.workers": {workers}, "n_folds": 5}})
t = time.perf_counter()
m = prepare(cfg, {data!r}, {out!r})
print("RESULT", json.dumps({{"seconds": time.perf_counter() - t, "images": m["counts"]["train"] + m["counts"]["test"]}}))
"""

REFERENCE = """
import io, json, time
import pandas as pd
import tensorflow as tf
from PIL import Image, ImageOps
from melanoma.data.records import serialize_example
data, out, size = {data!r}, {out!r}, {size}
t = time.perf_counter()
n = 0
for split in ("train", "test"):
    df = pd.read_csv(f"{{data}}/{{split}}.csv")
    with tf.io.TFRecordWriter(f"{{out}}/{{split}}.tfrec") as w:
        for row in df.itertuples():
            img = Image.open(f"{{data}}/jpeg/{{split}}/{{row.image_name}}.jpg").convert("RGB")
            width, height = img.size
            buf = io.BytesIO()
            ImageOps.fit(img, (size, size), method=Image.Resampling.LANCZOS).save(buf, format="JPEG", quality=95)
            fields = {{"image": buf.getvalue(), "image_name": row.image_name, "patient_id": 0, "sex": 0,
                      "age_approx": 0, "anatom_site_general_challenge": 0, "width": width, "height": height}}
            if split == "train":
                fields.update(diagnosis=0, target=int(row.target))
            w.write(serialize_example(fields, split))
            n += 1
print("RESULT", json.dumps({{"seconds": time.perf_counter() - t, "images": n}}))
"""


def _tree_rss(root_pid: int) -> int:
    """Resident bytes of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/statm") as f:
                rss[int(entry)] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measure(code: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"benchmark run failed:\n{err[-3000:]}")
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT"))[7:])
    result["peak_rss_mb"] = peak[0] / 1e6
    result["img_per_s"] = result["images"] / result["seconds"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="images (the memory run uses 4x as many)")
    ap.add_argument("--size", default="1024x768", help="synthetic JPEG size WxH")
    ap.add_argument("--out-size", type=int, default=256, help="stored side (prepare.size)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="all cores (default: the core count)")
    ap.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    ap.add_argument("--note", default="", help="a note for RESULTS.md (e.g. machine load)")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        data = make_data(tmp / "data", args.n, w, h)
        data4 = replicate(data, tmp / "data4", 4)
        print(f"generated {args.n} JPEGs at {w}x{h} in {time.perf_counter() - t:.0f} s "
              f"(and {4 * args.n} hard-linked names)", flush=True)
        (tmp / "ref").mkdir()  # the reference writes its files into an existing folder
        runs = {}
        for label, code in (
            ("ours, 1 worker", OURS.format(size=args.out_size, workers=1, data=str(data), out=str(tmp / "o1"))),
            (f"ours, {args.workers} workers", OURS.format(size=args.out_size, workers=args.workers, data=str(data),
                                                          out=str(tmp / "oN"))),
            ("reference (1 process)", REFERENCE.format(size=args.out_size, data=str(data), out=str(tmp / "ref"))),
            (f"ours, {args.workers} workers, 4N", OURS.format(size=args.out_size, workers=args.workers,
                                                              data=str(data4), out=str(tmp / "o4"))),
        ):
            runs[label] = measure(code)
            r = runs[label]
            print(f"{label:28s} {r['images']:6d} img {r['seconds']:7.1f} s {r['img_per_s']:7.1f} img/s "
                  f"peak RSS {r['peak_rss_mb']:7.0f} MB", flush=True)
    labels = list(runs)
    speedup = runs[labels[1]]["img_per_s"] / runs[labels[2]]["img_per_s"]
    rss_ratio = runs[labels[3]]["peak_rss_mb"] / runs[labels[1]]["peak_rss_mb"]
    print(f"throughput ours({args.workers} workers) / reference = {speedup:.2f}x (must be >= 1.7)")
    print(f"peak RSS 4N / N = {rss_ratio:.2f} (must be <= 1.25)")
    if args.record:
        _record(args, w, h, runs, speedup, rss_ratio)


def _record(args, w, h, runs, speedup, rss_ratio) -> None:
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = [f"\n### prepare: {dt.date.today().isoformat()}, {platform.node() or 'host'}, {os.cpu_count()} cores, "
             f"Python {platform.python_version()}{', ' + args.note if args.note else ''}\n",
             f"`bench/prepare.py --n {args.n} --size {w}x{h} --out-size {args.out_size}`\n",
             "| run | images | seconds | img/s | peak RSS (MB) |", "|---|---:|---:|---:|---:|"]
    for label, r in runs.items():
        lines.append(f"| {label} | {r['images']} | {r['seconds']:.1f} | {r['img_per_s']:.1f} | {r['peak_rss_mb']:.0f} |")
    lines.append(f"\nthroughput ours / reference: **{speedup:.2f}x** (must be >= 1.7); "
                 f"peak RSS 4N / N: **{rss_ratio:.2f}** (must be <= 1.25)\n")
    if "\n## prepare" not in text:
        text = text.rstrip("\n") + "\n\n## prepare\n"
    # Insert at the end of the prepare section (other sections, e.g. train, may follow it).
    start = text.index("\n## prepare") + 1
    end = text.find("\n## ", start)
    end = len(text) if end < 0 else end + 1
    block = "\n".join(lines) + "\n"
    path.write_text(text[:end].rstrip("\n") + "\n" + block + ("\n" + text[end:] if end < len(text) else ""))


if __name__ == "__main__":
    main()
