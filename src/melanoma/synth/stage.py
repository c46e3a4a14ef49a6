"""`melanoma synth`: per fold k, train the CycleGAN on k's training folds, then translate their benign images.

OUT/settings.json fixes what OUT was made with (tfrecords, folds, seed, synth settings but for `folds` and
`out`): a re-run with the same settings continues (finished folds kept, an interrupted CycleGAN resumed from its
checkpoint); other settings are refused before anything is written. Each fold writes into OUT/fold<k>/:
checkpoint.npz, history.csv (losses per step), samples/step_NNNNNN.png, its shards, index.csv and done.json.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import keras
import pandas as pd

from melanoma.config import Config, save_run_info
from melanoma.data.images import ImageSettings
from melanoma.data.schema import DIAGNOSIS, ID
from melanoma.errors import ConfigError
from melanoma.files import read_json, write_csv, write_json
from melanoma.runtime.backend import resolve_backend
from melanoma.data.manifest import Manifest
from melanoma.data.reader import find_shards
from melanoma.synth import data, loop, writer
from melanoma.synth.samples import sample_grid

log = logging.getLogger(__name__)

SETTINGS, DONE = "settings.json", "done.json"


def synth(cfg: Config, tfrec_dir: str, out: str | Path) -> dict:
    """Every requested fold; returns OUT/manifest.json's content."""
    scfg, out = cfg.synth, Path(out)
    shardset = find_shards(str(tfrec_dir), cfg.n_folds)
    folds = scfg.folds if scfg.folds is not None else list(range(shardset.n_folds))
    bad = [k for k in folds if not 0 <= k < shardset.n_folds]
    if bad:
        raise ConfigError(f"synth.folds: fold {bad[0]} does not exist (the records have {shardset.n_folds} folds)")
    settings = _settings(cfg, tfrec_dir, shardset)
    _check_folder(out, settings)  # refuses before anything is written
    backend, why = resolve_backend(cfg.train.devices.backend)
    log.info("synth: backend %s (%s); %s generator at %d px, %d steps per fold, folds %s", backend, why,
             scfg.generator, scfg.size, scfg.steps, folds)
    write_json(out / SETTINGS, settings)
    save_run_info(out, cfg, "synth", {"backend": backend})
    header = {"tfrecords": str(tfrec_dir), "image_size": settings["stored_size"], "n_folds": shardset.n_folds,
              "generator": scfg.generator, "naming": "image_name synth_<k>_<source image_name>; source "
              "synthetic:<k>; trained on in fold k only"}
    todo = [k for k in folds if not (out / f"fold{k}" / DONE).is_file()]
    if len(todo) < len(folds):
        log.info("synth: folds %s finished in an earlier run, kept", sorted(set(folds) - set(todo)))
    if not todo:
        return writer.read_index(out)
    keras.utils.set_random_seed(cfg.seed)
    nets = loop.build_nets(scfg)
    gan = (nets, loop.make_step(nets, scfg), loop.snapshot(nets))  # built and traced once, reset per fold
    for fold in todo:
        info = _fold(cfg, shardset, fold, out / f"fold{fold}", settings, gan)
        writer.update_index(out, header, fold, info)
        write_json(out / f"fold{fold}" / DONE, {k: v for k, v in info.items() if k != "shards"})
    return writer.read_index(out)


def _settings(cfg: Config, tfrec_dir: str, shardset: Manifest) -> dict:
    synth = {k: v for k, v in dataclasses.asdict(cfg.synth).items() if k not in ("folds", "out")}
    return {"tfrecords": str(tfrec_dir), "n_folds": shardset.n_folds, "seed": cfg.seed,
            "stored_size": shardset.image_size or cfg.synth.size, "synth": synth}


def _check_folder(out: Path, settings: dict) -> None:
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / SETTINGS).is_file():
        raise ConfigError(f"{out}: exists and is not a `melanoma synth` folder (no {SETTINGS}): choose another --out")
    old = read_json(out / SETTINGS)
    flat_old, flat_new = _flat(old), _flat(settings)
    changed = sorted(k for k in set(flat_old) | set(flat_new) if flat_old.get(k) != flat_new.get(k))
    if changed:
        k = changed[0]
        raise ConfigError(f"{out}: was written with {k} = {flat_old.get(k)!r}, now {flat_new.get(k)!r}; "
                          "continue with the same settings or choose another --out")


def _flat(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        flat.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return flat


def _fold(cfg: Config, shardset: Manifest, fold: int, fold_dir: Path, settings: dict, gan: tuple) -> dict:
    scfg, start = cfg.synth, time.perf_counter()
    nets, step_fn, initial = gan
    fold_dir.mkdir(parents=True, exist_ok=True)
    for stale in fold_dir.glob(".*.tmp"):  # an atomic write of ours cut short by a kill; never a finished file
        stale.unlink()
    pool, sources = data.training_pool(shardset, fold), data.source_shards(shardset, fold)
    log.info("synth: fold %d: CycleGAN on %d training shards (fold %d's own never read)", fold, len(pool), fold)
    pairs = data.training_pairs(pool, scfg.size, shardset.image_size, scfg.batch_size, cfg.seed + fold, scfg.flip,
                                fold)
    fixed = next(data.benign_sources(sources, scfg.size, shardset.image_size, scfg.sample_images,
                                     scfg.sample_images).as_numpy_iterator())["pixels"]

    def draw(step: int) -> None:
        sample_grid(fixed, nets.g_ab, nets.g_ba, fold_dir / "samples" / f"step_{step:06d}.png",
                    f"fold {fold}, step {step}: {scfg.generator} {scfg.size} px")

    # numpy batches: what both backends' steps take (a jitted JAX function refuses TensorFlow tensors)
    trained = loop.train_cyclegan(nets, step_fn, initial, pairs.as_numpy_iterator(), scfg, fold_dir,
                                  f"fold {fold}", draw)
    total = sum(s.count - (s.positives or 0) for s in sources)  # benign images (an upper bound without counts)
    batches = data.benign_sources(sources, scfg.size, shardset.image_size, 16, scfg.max_images)
    image_settings = ImageSettings(settings["stored_size"], "stretch", shardset.quality or cfg.prepare.quality)
    shards, rows = writer.write_fold(nets.g_ab, batches, fold_dir, fold, image_settings, _melanoma_code(shardset),
                                     cfg.prepare.shard_mb * 1e6, min(total, scfg.max_images or total))
    write_csv(fold_dir / "index.csv", pd.DataFrame(rows, columns=[ID, "source_image", "fold"]))
    log.info("synth: fold %d: %d synthetic melanomas in %d shards, %.0f s", fold, len(rows), len(shards),
             time.perf_counter() - start)
    return {"images": len(rows), "steps": scfg.steps, "seconds": round(time.perf_counter() - start, 1),
            **trained, "shards": shards}


def _melanoma_code(manifest: Manifest) -> int:
    """The diagnosis code of "melanoma" in the records' vocabulary (-1 when it is unknown: the public layout)."""
    vocab = manifest.vocab.get(DIAGNOSIS, [])
    return vocab.index("melanoma") if "melanoma" in vocab else -1
