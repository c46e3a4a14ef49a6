"""Rehearse the generated Kaggle notebook on the package sets of Kaggle's and Colab's images (`make rehearse`).

For each image below: a virtualenv with that image's Python and framework versions and the packages it ships
that the pipeline uses (built once from the package registry and cached in .rehearse/venvs/, reused while its
package list is unchanged; each rehearsal works on a hard-linked copy, so the install step always starts from
the image as shipped). Then kernels/melanoma_kaggle.ipynb, generated as `melanoma kaggle push` generates it, is
executed top to bottom with nbclient on an ipykernel of that virtualenv, against a fake /kaggle tree
(MELANOMA_KAGGLE_ROOT): the demo's competition CSVs, and public-layout TFRecords of the demo images standing in
for cdeotte/melanoma-384x384. A tiny run (small_cnn_32, 32 px, 1 epoch, 2 folds) comes from
MELANOMA_NOTEBOOK_SET, the notebook's rehearsal-only overrides. Each must end with a valid submission.csv; the
Kaggle TPU one runs a second session with the first one's output attached (`kaggle push --chain`), which must
reuse its folds.

What this proves: the notebook's cells, the install step (only what is missing, pinned by the image's freeze),
the backend choice and the whole pipeline run on these Python, TensorFlow, JAX and Keras versions, with JAX's
DataParallel over 8 simulated devices for the TPU images. What it cannot: no real TPU or libtpu (the TPU VM's
environment variables are not set, since train would rightly refuse a TPU that JAX cannot see), no GPU, no
Kaggle mounts, kagglehub or network policies, no Colab-only cells (Drive, GCS, secrets, download, submit).

    python scripts/rehearse.py [--only kaggle-tpu,colab-tpu,kaggle-gpu] [--keep]
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".rehearse"
DEMO = ROOT / "data" / "demo"
SLUG = "melanoma-tpu"  # kaggle.slug's default: the chained session finds its previous output by it
COMPETITION = "siim-isic-melanoma-classification"
TINY = ("n_folds=2 train.model=small_cnn_32 train.size=32 train.epochs=1 train.weights=none train.batch_size=4 "
        "train.tta=0 train.tta_flips=false train.devices.steps_per_execution=1 tabular.epochs=2 "
        "tabular.gbm_max_iter=20 tabular.lgbm_max_rounds=20 tabular.hgb_max_iter=20 tabular.gbm_importance_repeats=0")
JAX8 = "train.devices.backend=jax train.devices.cpu_replicas=8"
KERNEL = ["ipykernel"]  # every image runs notebooks in an ipykernel


@dataclass(frozen=True)
class Image:
    name: str
    python: str  # the interpreter version (pyenv's, or pythonX.Y on PATH)
    packages: tuple[str, ...]  # frameworks at the image's versions, then what it ships that the pipeline uses
    sets: str  # MELANOMA_NOTEBOOK_SET beyond TINY
    chained: bool = False
    env: dict = field(default_factory=dict)


IMAGES = (
    # Kaggle's TPU VM image: Python 3.12, tensorflow-cpu 2.20, jax[tpu] through libtpu 0.0.17 (JAX 0.7.2) and an
    # unpinned keras>3, taken here as 3.13.2 (what the shared measurements and Colab use); no lightgbm.
    Image("kaggle-tpu", "3.12", ("tensorflow-cpu==2.20.*", "jax==0.7.2", "jaxlib==0.7.2", "keras==3.13.2",
                                 "kagglehub", "scikit-learn", "pandas", "matplotlib", "setuptools", *KERNEL),
          JAX8, chained=True),
    # Colab's TPU runtime: Python 3.13, JAX 0.7.2, Keras 3.13.2, no TensorFlow at all (the notebook adds it).
    Image("colab-tpu", "3.13.0", ("jax==0.7.2", "jaxlib==0.7.2", "keras==3.13.2", "scikit-learn", "pandas",
                                  "matplotlib", "setuptools", *KERNEL), JAX8),
    # Kaggle's GPU image: Python 3.12, TensorFlow 2.20 (the CPU build stands in) and Keras 3.13.2; one fold.
    Image("kaggle-gpu", "3.12", ("tensorflow-cpu==2.20.*", "keras==3.13.2", "kagglehub", "scikit-learn", "pandas",
                                 "matplotlib", "lightgbm", "setuptools", *KERNEL), "train.folds=[0]"),
)


def log(msg: str) -> None:
    print(f"[rehearse {dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def find_python(version: str) -> str:
    """pyenv's interpreter of that version (PYENV_ROOT or ~/.pyenv), else pythonX.Y on PATH."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for folder in sorted(glob.glob(str(pyenv / f"{version}*")), reverse=True):
        exe = Path(folder) / "bin" / f"python{'.'.join(version.split('.')[:2])}"
        if exe.is_file():
            return str(exe)
    found = shutil.which(f"python{'.'.join(version.split('.')[:2])}")
    if found and subprocess.run([found, "-c", "import platform; print(platform.python_version())"],
                                capture_output=True, text=True).stdout.startswith(version):
        return found
    sys.exit(f"rehearse: error: no Python {version} (install it with `pyenv install {version}`, or put "
             f"python{'.'.join(version.split('.')[:2])} on PATH)")


def image_venv(image: Image) -> Path:
    """The cached virtualenv of the image as shipped; one without its .complete mark is our own interrupted
    build, started over."""
    python = find_python(image.python)
    key = hashlib.sha256(json.dumps([python, image.packages]).encode()).hexdigest()[:12]
    venv = CACHE / "venvs" / f"{image.name}-{key}"
    if (venv / ".complete").is_file():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    log(f"{image.name}: building the image's virtualenv ({python}): {' '.join(image.packages)}")
    start = time.time()
    run([python, "-m", "venv", venv])
    run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", *image.packages])
    (venv / ".complete").write_text(f"built in {time.time() - start:.0f} s\n")
    return venv


def copy_venv(venv: Path, to: Path) -> Path:
    """A hard-linked copy: instant, and the cache stays as it is (pip and Python replace files, never write into
    them; nothing here may either). Always run as COPY/bin/python -m ...: its scripts still name the cache."""
    run(["cp", "-al", venv, to])
    return to


VERSIONS = """
import importlib.metadata as m, platform
def v(d):
    try:
        return m.version(d)
    except m.PackageNotFoundError:
        return "none"
tf = next((v(d) for d in ("tensorflow", "tensorflow-cpu") if v(d) != "none"), "none")
print(f"Python {platform.python_version()}, JAX {v('jax')}, Keras {v('keras')}, TensorFlow {tf}, "
      f"lightgbm {v('lightgbm')}, numpy {v('numpy')}")
"""


def versions(python: Path) -> str:
    """The versions a virtualenv holds (asked without importing anything heavy)."""
    return subprocess.run([python, "-c", VERSIONS], capture_output=True, text=True, check=True).stdout.strip()


# --------------------------------------------------------------------------------------------------------
# the fake /kaggle tree


def competition_files(out: Path) -> Path:
    """Every other image of the demo (160 training, 40 test): the competition's CSVs for the fake mount."""
    import pandas as pd

    out.mkdir(parents=True)
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        pd.read_csv(DEMO / name, dtype=str, keep_default_na=False).iloc[::2].to_csv(out / name, index=False)
    return out


def public_tfrecords(comp: Path, out: Path) -> Path:
    """The competition's images in the public datasets' layout: trainNN-COUNT.tfrec (2 per fold of 2),
    testNN-COUNT.tfrec, and train.csv with the `tfrecord`, `width` and `height` columns (this repository's code
    writes them)."""
    sys.path.insert(0, str(ROOT / "src"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import pandas as pd
    import tensorflow as tf
    from PIL import Image as PILImage

    from melanoma.data.records import build_vocabularies, encode_metadata, serialize_example, shard_name

    out.mkdir(parents=True)
    frames = {s: pd.read_csv(comp / f"{s}.csv", dtype={"patient_id": "string"}) for s in ("train", "test")}
    vocab = build_vocabularies(frames["train"], frames["test"])
    sizes = {}
    for split, n_files in (("train", 4), ("test", 2)):
        df = frames[split].assign(patient_id=lambda d: d["image_name"])  # the demo has no patients: one per image
        codes = encode_metadata(df, vocab, {p: i for i, p in enumerate(df["patient_id"])})
        for f, rows in enumerate(np.array_split(np.arange(len(df)), n_files)):
            with tf.io.TFRecordWriter(str(out / shard_name(split, f, len(rows)))) as w:
                for i in rows:
                    name = df["image_name"].iloc[i]
                    img = PILImage.open(DEMO / "jpeg" / split / f"{name}.jpg").convert("RGB")
                    sizes[name] = (img.width, img.height, f if split == "train" else -1)
                    small = np.asarray(img.resize((64, 64)))
                    values = {"image": tf.io.encode_jpeg(small, quality=90).numpy(), "image_name": name,
                              **{k: int(v) for k, v in codes.iloc[i].items()}}
                    values.setdefault("diagnosis", 0)
                    w.write(serialize_example(values, split))
    train = frames["train"].assign(tfrecord=[sizes[n][2] for n in frames["train"]["image_name"]],
                                   width=[sizes[n][0] for n in frames["train"]["image_name"]],
                                   height=[sizes[n][1] for n in frames["train"]["image_name"]])
    train.to_csv(out / "train.csv", index=False)
    return out


def source_copy(out: Path) -> Path:
    """This working tree as the notebook's SOURCE dataset: tracked and untracked files git does not ignore."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, out / rel)
    return out


def kaggle_tree(root: Path, inputs: Path, previous: Path | None = None) -> Path:
    """ROOT/input (the competition, the public TFRecords, this repository, a previous session's output) and
    ROOT/working, in today's mount layout."""
    mounts = {root / "input" / "competitions" / COMPETITION: inputs / "competition",
              root / "input" / "datasets" / "cdeotte" / "melanoma-384x384": inputs / "melanoma-384x384",
              root / "input" / "datasets" / "alice" / "melanoma-src": inputs / "melanoma-src"}
    for link, target in mounts.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        run(["cp", "-al", target, link])
    if previous is not None:  # `kaggle push --chain`: the notebook's own last output, attached
        shutil.copytree(previous, root / "input" / "notebooks" / "alice" / SLUG)
    (root / "working").mkdir()
    return root


# --------------------------------------------------------------------------------------------------------
# one execution of the notebook


def kernel_spec(jupyter: Path, python: Path, env: dict[str, str]) -> str:
    """A kernelspec running an ipykernel on the image's Python, with the session's environment."""
    spec = jupyter / "kernels" / "rehearsal"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "rehearsal", "language": "python", "env": env}))
    return "rehearsal"


def execute(image: Image, venv: Path, work: Path, inputs: Path, label: str,
            previous: Path | None = None) -> tuple[Path, str]:
    """Run the notebook once in a fresh copy of the image; returns the fake /kaggle root and the run's output."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    sys.path.insert(0, str(ROOT / "src"))
    from melanoma.kaggle.notebooks import NOTEBOOKS, build_notebook, notebook_json

    kaggle = kaggle_tree(work / "kaggle", inputs, previous)
    python = copy_venv(venv, work / "image") / "bin" / "python"
    env = {"KAGGLE_KERNEL_RUN_TYPE": "Batch", "MELANOMA_KAGGLE_ROOT": str(kaggle),
           "MELANOMA_NOTEBOOK_CHECKOUT": str(work / "checkout"), "MELANOMA_NOTEBOOK_SET": f"{TINY} {image.sets}",
           "PATH": f"{python.parent}:{os.environ['PATH']}", "HOME": str(work / "home"), "TMPDIR": str(work / "tmp"),
           "KERAS_HOME": str(work / "keras"), "MPLCONFIGDIR": str(work / "mpl"), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", **image.env}
    if "jax" in image.sets:  # 8 simulated devices standing in for the TPU's chips
        env.update(XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    (work / "home").mkdir()
    (work / "tmp").mkdir()
    os.environ["JUPYTER_PATH"] = str(work / "jupyter")
    name = kernel_spec(work / "jupyter", python, env)
    text = (ROOT / "kernels" / "notebook.ipy").read_text()
    params = {"SOURCE": str(kaggle / "input" / "datasets" / "alice" / "melanoma-src"), "ACCELERATOR": ""}
    nb = nbformat.reads(notebook_json(build_notebook(text, "kaggle", params)), as_version=4)
    log(f"{image.name}: executing {NOTEBOOKS['kaggle']} ({label}) on {versions(python)}")
    client = NotebookClient(nb, timeout=1500, kernel_name=name, resources={"metadata": {"path": str(work)}})
    start = time.time()
    try:
        client.execute()
    except CellExecutionError as e:
        nbformat.write(nb, work / NOTEBOOKS["kaggle"])
        last = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()[-1]  # without the terminal colours
        raise RehearsalFailed(f"{image.name} ({label}): a cell failed: {last} "
                              f"(the executed notebook: {work / NOTEBOOKS['kaggle']})") from None
    nbformat.write(nb, work / NOTEBOOKS["kaggle"])
    output = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    log(f"{image.name}: {label} done in {time.time() - start:.0f} s on {versions(python)}")
    return kaggle, output


class RehearsalFailed(Exception):
    pass


def check_submission(kaggle: Path, inputs: Path, image: Image, label: str) -> None:
    import pandas as pd

    from melanoma.data.submission import validate_submission

    path = kaggle / "working" / "submission.csv"
    if not path.is_file():
        raise RehearsalFailed(f"{image.name} ({label}): no {path}")
    validate_submission(pd.read_csv(path, dtype={"image_name": "string"}),
                        pd.read_csv(inputs / "competition" / "sample_submission.csv", dtype={"image_name": "string"}),
                        str(path))


def rehearse(image: Image, work: Path, inputs: Path) -> str:
    venv = image_venv(image)
    kaggle, output = execute(image, venv, work / "session1", inputs, "session 1")
    check_submission(kaggle, inputs, image, "session 1")
    if image.chained:
        kaggle, output = execute(image, venv, work / "session2", inputs, "session 2, the first one's output attached",
                                 previous=kaggle / "working")
        check_submission(kaggle, inputs, image, "session 2")
        for needed in ("copied fold0, fold1", "already finished"):
            if needed not in output:
                raise RehearsalFailed(f"{image.name} (session 2): the attached folds were not reused ({needed!r} "
                                      "is not in its output)")
    return versions(work / "session1" / "image" / "bin" / "python")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated image names: " + ", ".join(i.name for i in IMAGES))
    parser.add_argument("--keep", action="store_true", help="keep this call's image copies and checkouts")
    args = parser.parse_args(argv)
    images = [i for i in IMAGES if not args.only or i.name in args.only.split(",")]
    for name in ("KERAS_BACKEND", "XLA_FLAGS", "JAX_PLATFORMS", "KAGGLE_KERNEL_RUN_TYPE", "MELANOMA_KAGGLE_ROOT"):
        os.environ.pop(name, None)  # the rehearsed sessions get theirs from their kernelspec only
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    work = CACHE / "runs" / stamp
    inputs = work / "inputs"
    public_tfrecords(competition_files(inputs / "competition"), inputs / "melanoma-384x384")
    source_copy(inputs / "melanoma-src")
    results, start = {}, time.time()
    try:
        for image in images:
            t = time.time()
            results[image.name] = f"{rehearse(image, work / image.name, inputs)} ({time.time() - t:.0f} s)"
    except (RehearsalFailed, subprocess.CalledProcessError) as e:
        print(f"rehearse: error: {e}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:  # this call's copies (the cached images stay); outputs and notebooks are kept
            for image in images:
                for session in (work / image.name).glob("session*"):
                    for made in ("image", "checkout", "tmp"):
                        shutil.rmtree(session / made, ignore_errors=True)
    log(f"all passed in {time.time() - start:.0f} s; executed notebooks and outputs in {work}")
    for name, result in results.items():
        print(f"  {name:<11} {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
