"""The Kaggle / Colab notebooks, generated from one source (kernels/notebook.ipy), and the push folder.

`build_notebooks` regenerates kernels/*.ipynb; `write_push_folder` writes what `kaggle kernels push` takes:
the notebook with SOURCE, ACCELERATOR (and WHEELS) set, and kernel-metadata.json (accelerator, data sources, chaining).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from melanoma.files import write_json, write_text
from melanoma.kaggle.api import ACCELERATORS, Credentials, KaggleError, tfrecords_dataset
from melanoma.runtime.datasets import TFRECORD_DATASETS, external_dataset

log = logging.getLogger("melanoma.kaggle.api")  # kaggle's one logger

NOTEBOOK_SOURCE = "notebook.ipy"  # in kernels/: the one source of both generated notebooks
NOTEBOOKS = {"kaggle": "melanoma_kaggle.ipynb", "colab": "melanoma_colab.ipynb"}
# ISIC 2024's code competition: the internet-off inference notebook, a Kaggle notebook of its own source.
INFERENCE_SOURCE = "isic2024_inference.ipy"
INFERENCE_NOTEBOOK = "melanoma_isic2024_inference.ipynb"
ISIC2024_COMPETITION = "isic-2024-challenge"
# every generated notebook: (source, target, notebook)
GENERATED = [(NOTEBOOK_SOURCE, target, name) for target, name in NOTEBOOKS.items()] + \
    [(INFERENCE_SOURCE, "kaggle", INFERENCE_NOTEBOOK)]


def parse_cells(text: str, target: str) -> list[tuple[str, str]]:
    """Cells of the notebook source for one target: [(cell_type, source)].

    `# %%` starts a code cell, `# %% [markdown]` a markdown cell (its lines lose their leading `# `); a tag
    after the marker (`# %% kaggle`, `# %% [markdown] colab`) keeps the cell to that target only.
    """
    cells: list[tuple[str, str]] = []
    header, lines = None, []

    def flush() -> None:
        if header is None:
            return
        kind, tags = header
        if tags and target not in tags:
            return
        body = [re.sub(r"^# ?", "", ln) for ln in lines] if kind == "markdown" else lines
        cells.append((kind, "\n".join(body).strip("\n")))

    for line in text.splitlines():
        m = re.match(r"^# %%(?: \[(markdown)\])?(.*)$", line)
        if m:
            flush()
            header, lines = ("markdown" if m.group(1) else "code", m.group(2).split()), []
        elif header is not None:
            lines.append(line)
    flush()
    return cells


def build_notebook(text: str, target: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The .ipynb (as a dict) for `target` (kaggle | colab) from the source text.

    `params` replaces the values of top-level `NAME = "..."` lines (how `kaggle push` sets SOURCE).
    """
    if target not in NOTEBOOKS:
        raise ValueError(f"unknown notebook target {target!r}")
    cells = []
    for i, (kind, source) in enumerate(parse_cells(text, target)):
        for name, value in (params or {}).items():
            source = re.sub(rf"^{name} = .*$", f"{name} = {json.dumps(value)}", source, flags=re.M)
        # nbformat 4.5 wants an id per cell: stable ones, so regenerating changes nothing
        cell: dict[str, Any] = {"cell_type": kind, "id": f"cell-{i}", "metadata": {},
                                "source": source.splitlines(keepends=True)}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    metadata: dict[str, Any] = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    if target == "colab":
        metadata["accelerator"] = "TPU"
        metadata["colab"] = {"provenance": []}
    return {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}


def notebook_json(nb: dict[str, Any]) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def build_notebooks(kernels_dir: str | Path, check: bool = False) -> list[Path]:
    """Write (or with check=True: compare) every generated notebook in kernels/; return the stale ones."""
    kernels_dir = Path(kernels_dir)
    stale = []
    for source, target, name in GENERATED:
        src = kernels_dir / source
        if not src.is_file():
            raise KaggleError(f"{src}: notebook source not found (run from the repository root)")
        path, content = kernels_dir / name, notebook_json(build_notebook(src.read_text(), target))
        if not path.is_file() or path.read_text() != content:
            stale.append(path)
            if not check:
                write_text(path, content)
    return stale


# --------------------------------------------------------------------------------------------------------
# kernels


def kernel_id(kcfg: Any, creds: Credentials | None) -> str:
    username = kcfg.username or (creds.username if creds else None)
    if not username:
        raise KaggleError("no Kaggle username for the kernel id: set kaggle.username (an access token does not "
                          "name its user)")
    return f"{username}/{kcfg.slug}"


def dataset_ref(source: str, owner: str) -> str:
    """OWNER/SLUG of a dataset named as OWNER/SLUG, SLUG (the user's own) or a /kaggle/input/... path."""
    parts = source.rstrip("/").split("/")
    if source.startswith("/kaggle/input/datasets/"):
        return "/".join(parts[4:6])
    if source.startswith("/"):
        return f"{owner}/{parts[-1]}"
    return source if "/" in source else f"{owner}/{source}"


def _notebook_source(source: str) -> str:
    """SOURCE for the notebook: a git URL as it is, or the mount path of a Kaggle dataset (OWNER/SLUG mounts at
    /kaggle/input/datasets/OWNER/SLUG today; a bare SLUG keeps the older /kaggle/input/SLUG)."""
    if "://" in source or source.startswith("/"):
        return source
    return f"/kaggle/input/datasets/{source}" if "/" in source else f"/kaggle/input/{source}"


def kernel_metadata(cfg: Any, kid: str, accelerator: str, code_file: str) -> dict[str, Any]:
    """kernel-metadata.json for the notebook: sources, accelerator, no docker image pin (latest image)."""
    k = cfg.kaggle
    if accelerator not in ACCELERATORS:
        raise KaggleError(f"unknown accelerator {accelerator!r} (tpu, gpu or none)")
    if len(k.title) < 5:
        raise KaggleError(f"kaggle.title must have at least 5 characters, got {k.title!r}")
    slug = re.sub(r"[^a-z0-9]+", "-", k.title.lower()).strip("-")
    if slug != kid.split("/")[1]:
        log.warning("kaggle: the title %r does not slugify to the kernel slug %r; Kaggle may rename it",
                    k.title, kid.split("/")[1])
    datasets = [tfrecords_dataset(cfg.prepare.size)] if cfg.prepare.size in TFRECORD_DATASETS else []
    owner = kid.split("/")[0]
    for ref in (k.source, k.wheels):  # the package's own dataset; offline, the wheels `kaggle wheels` built
        if ref and _notebook_source(ref).startswith("/kaggle/input/"):
            datasets.append(dataset_ref(ref, owner))
    for ref in cfg.train.sources.external:  # external training data (EXTERNAL_DATASETS names at the configured size)
        slug = external_dataset(ref, cfg.prepare.size)
        if slug and slug not in datasets:
            datasets.append(slug)
    meta = {"id": kid, "title": k.title, "code_file": code_file, "language": "python",
            "kernel_type": "notebook", "is_private": k.private, "enable_internet": k.internet,
            "competition_sources": [k.competition], "dataset_sources": datasets,
            # chain: the notebook's own last output comes back as an input, and `run` resumes from it
            "kernel_sources": [kid] if k.chain else [], "model_sources": []}
    meta.update(ACCELERATORS[accelerator])
    return meta


def write_push_folder(cfg: Any, folder: str | Path, kid: str, accelerator: str, notebook_text: str) -> Path:
    """The folder `kaggle kernels push -p` takes: the notebook (SOURCE set from kaggle.source) + metadata."""
    folder = Path(folder)
    source = cfg.kaggle.source
    if "YOUR-GITHUB-NAME" in source:
        raise KaggleError("set kaggle.source to your copy of this repository: a git URL "
                          "(https://github.com/<you>/melanoma.git) or the slug of your Kaggle dataset holding it")
    # ACCELERATOR: the notebook exports it, and `train` refuses a TPU push that landed on a machine without one.
    params = {"SOURCE": _notebook_source(source),
              "ACCELERATOR": ACCELERATORS.get(accelerator, {}).get("machine_shape", "")}
    if cfg.kaggle.wheels:
        params["WHEELS"] = _notebook_source(cfg.kaggle.wheels)
    nb = build_notebook(notebook_text, "kaggle", params)
    write_text(folder / NOTEBOOKS["kaggle"], notebook_json(nb))
    write_json(folder / "kernel-metadata.json", kernel_metadata(cfg, kid, accelerator, NOTEBOOKS["kaggle"]))
    return folder


def inference_metadata(cfg: Any, kid: str, accelerator: str, code_file: str, bundle: str) -> dict[str, Any]:
    """kernel-metadata.json of the ISIC 2024 inference notebook: internet off (a code competition's rule), the
    competition, the wheels dataset and the bundle dataset attached."""
    k = cfg.kaggle
    if not k.wheels:
        raise KaggleError("set kaggle.wheels to your wheels dataset (`melanoma kaggle wheels`, then upload it): the "
                          "inference notebook runs with the internet off")
    owner = kid.split("/")[0]
    meta = {"id": kid, "title": kid.split("/")[1].replace("-", " ").capitalize(), "code_file": code_file,
            "language": "python", "kernel_type": "notebook", "is_private": k.private, "enable_internet": False,
            "competition_sources": [ISIC2024_COMPETITION],
            "dataset_sources": [dataset_ref(k.wheels, owner), dataset_ref(bundle, owner)],
            "kernel_sources": [], "model_sources": []}
    meta.update(ACCELERATORS[accelerator])
    return meta


def write_inference_folder(cfg: Any, folder: str | Path, kid: str, accelerator: str, notebook_text: str,
                           bundle: str) -> Path:
    """The push folder of the ISIC 2024 inference notebook, with WHEELS and BUNDLE set to their mounts."""
    folder = Path(folder)
    meta = inference_metadata(cfg, kid, accelerator, INFERENCE_NOTEBOOK, bundle)
    owner = kid.split("/")[0]
    params = {"WHEELS": _notebook_source(dataset_ref(cfg.kaggle.wheels, owner)),
              "BUNDLE": _notebook_source(dataset_ref(bundle, owner))}
    write_text(folder / INFERENCE_NOTEBOOK, notebook_json(build_notebook(notebook_text, "kaggle", params)))
    write_json(folder / "kernel-metadata.json", meta)
    return folder
