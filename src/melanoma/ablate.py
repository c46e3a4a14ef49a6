"""`melanoma ablate --config base.yaml --vary KEY=V1,V2 [--vary ...] --seeds N [--out DIR]`: a measured grid.

Every setting (the cartesian product of the varied values, plus the base config's own values) is trained with
N seeds (the config's seed, +1, ...) on the SAME folds: OUT/folds.csv is dealt once, by the base setting's
prepare (duplicate images share a fold, as in `melanoma run`), and every other TFRecords folder
(OUT/tfrecords/<hash>: one per distinct `prepare` section, so varying a prepare key prepares again) is written
from it. Each run goes to OUT/runs/<hash>-<values>/seed<S>/: a hash of everything that changes the result (a
folder with the same hash is the same setting, whatever --vary keys reached it), then the setting's values. A
run whose folds are all finished is reused, so a second call with one more value trains only the new setting;
an interrupted run resumes (the train stage's own resume).

The table (OUT/ablate.csv, .md, .json; the markdown is printed): per setting the pooled OOF AUC of each seed,
their mean and a 95% t-interval over seeds, and the paired difference against the base setting. The
difference is the mean over seeds of (setting - base) on the same seed and images; its interval and p-value
come from a paired bootstrap over patients (the resampling of `melanoma compare`, report/metrics.py): each
resample draws patients once, takes every seed's AUC difference on it and averages them over seeds; p is
two-sided (twice the smaller share of resampled mean differences on either side of 0). DeLong's p per seed
(`melanoma compare`'s test, which treats images as independent) is in ablate.json beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melanoma.config import Config, apply_overrides, to_dict
from melanoma.config.aliases import flat_train, new_key, old_leaf, tell
from melanoma.data.competition import ID_COLUMNS, internal_ids
from melanoma.data.schema import ID, PATIENT, TARGET
from melanoma.errors import ConfigError, InputError
from melanoma.files import write_csv, write_json, write_text
from melanoma.config.typed import yaml_value
from melanoma.config.command import Command, Plan
from melanoma.outputs import Out

log = logging.getLogger(__name__)

Setting = tuple[tuple[str, Any], ...]  # ((key, value), ...) in --vary order


def parse_vary(items: list[str]) -> list[tuple[str, list[Any]]]:
    """`KEY=V1,V2` -> (key, [values]); values read as YAML scalars, as `--set` reads them."""
    out: list[tuple[str, list[Any]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        spelled, key = key.strip(), new_key(key.strip())  # an old train key (train.ema) varies the one it moved to
        tell([(spelled, key)] if spelled != key else [])
        if not sep or not key or not values.strip():
            raise ConfigError(f"--vary {item!r}: expected KEY=V1,V2 (e.g. train.head=binary,diagnosis)")
        if key in ("seed", "paths") or key.startswith("paths."):
            raise ConfigError(f"--vary {key}: seeds come from --seeds, and paths are where runs go, not settings")
        if any(k == key for k, _ in out):
            raise ConfigError(f"--vary {key}: given twice; list all its values in one --vary")
        vals = [yaml_value(v.strip(), f"--vary {key}") for v in values.split(",")]
        if len(set(map(repr, vals))) != len(vals):
            raise ConfigError(f"--vary {item!r}: a value is listed twice")
        out.append((key, vals))
    if not out:
        raise ConfigError("ablate: give at least one --vary KEY=V1,V2")
    return out


def get_key(cfg: Config, key: str) -> Any:
    node: Any = to_dict(cfg)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"--vary {key}: unknown config key")
        node = node[part]
    return node


def grid(cfg: Config, varies: list[tuple[str, list[Any]]]) -> tuple[Setting, list[Setting]]:
    """(the base setting, every setting): the product of the varied values, the base first (added if absent)."""
    base = tuple((k, get_key(cfg, k)) for k, _ in varies)
    settings = [tuple(zip([k for k, _ in varies], combo)) for combo in itertools.product(*(v for _, v in varies))]
    for s in settings:  # every value must be valid before anything is trained
        apply_overrides(cfg, dict(s))
    return base, [base] + [s for s in settings if s != base]


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def setting_cfg(cfg: Config, setting: Setting, seed: int | None = None) -> Config:
    values = dict(setting)
    if seed is not None:
        values["seed"] = seed
    return apply_overrides(cfg, values)


def setting_hash(cfg: Config) -> str:
    """A hash of what changes a run's result (the data, folds, prepare and train sections; not the seed):
    an edited base config never reuses a run of another one, and the same setting reached through other
    --vary keys does."""
    d = to_dict(cfg) | {"train": flat_train(cfg.train)}  # the layout of before issue 25: older folders match
    return _hash({k: d[k] for k in ("n_folds", "data", "prepare", "train")} | {"data_dir": d["paths"]["data"]})


def setting_folder(runs: Path, setting: Setting, cfg: Config) -> Path:
    """RUNS/<hash>-<values>: an existing folder of the same hash is the same setting, whatever its name says."""
    h = setting_hash(cfg)
    found = sorted(runs.glob(f"{h}-*")) if runs.is_dir() else []
    if found:
        return found[0]
    words = re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(f"{old_leaf(k)}-{v}" for k, v in setting))[:80]
    return runs / f"{h}-{words}"


def finished(run_dir: Path, cfg: Config) -> bool:
    """Every fold the config trains is done and the run-level outputs are written."""
    folds = cfg.train.folds if cfg.train.folds is not None else range(cfg.n_folds)
    return (run_dir / "metrics.json").is_file() and (run_dir / "oof.csv").is_file() and all(
        (run_dir / f"fold{k}" / "done.json").is_file() for k in folds)


def shared_folds(cfg: Config, out: Path) -> Path:
    """OUT/folds.csv, dealt once by the base setting's prepare (as `melanoma run` does: it hashes every image,
    so duplicate images share a fold); every other records folder is written from it."""
    from melanoma.data.folds import write_folds

    path = out / "folds.csv"
    if not path.is_file():
        base = records_folder(cfg, out)
        if not (base / "manifest.json").is_file():
            _prepare(cfg, base, None)
        write_folds(pd.read_csv(base / "folds.csv", dtype={ID: "string", PATIENT: "string"}), path, cfg)
        log.info("ablate: folds dealt once, by the base setting's prepare, into %s", path)
    return path


def records_folder(cfg: Config, out: Path) -> Path:
    """OUT/tfrecords/<hash of what prepare reads and how>: one folder per distinct prepare section."""
    d = to_dict(cfg)
    return out / "tfrecords" / _hash({"prepare": d["prepare"], "data": d["data"], "n_folds": d["n_folds"],
                                      "data_dir": d["paths"]["data"]})


def _prepare(cfg: Config, folder: Path, folds: Path | None) -> None:
    from melanoma.data.prepare import prepare

    prepare(cfg, cfg.paths.data, folder, folds)


def records_for(cfg: Config, out: Path, folds: Path) -> Path:
    """The setting's records folder, prepared from the shared folds unless it is there already."""
    folder = records_folder(cfg, out)
    if not (folder / "manifest.json").is_file():
        _prepare(cfg, folder, folds)
    return folder


def run_grid(cfg: Config, varies: list[tuple[str, list[Any]]], seeds: int, out: Path,
             train_fn: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Train (or reuse) every setting x seed, then build the table. Returns what ablate.json holds."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    base, settings = grid(cfg, varies)
    out.mkdir(parents=True, exist_ok=True)
    folds = shared_folds(cfg, out)
    if train_fn is None:
        from melanoma.image.train import train as train_fn
    seed_list = [cfg.seed + i for i in range(seeds)]
    runs: dict[Setting, dict[int, Path]] = {}
    trained = reused = 0
    for setting in settings:
        folder = setting_folder(out / "runs", setting, setting_cfg(cfg, setting))
        runs[setting] = {}
        for seed in seed_list:
            run_cfg, run_dir = setting_cfg(cfg, setting, seed), folder / f"seed{seed}"
            if finished(run_dir, run_cfg):
                log.info("ablate: %s seed %d: finished in %s, reused", label(setting), seed, run_dir)
                reused += 1
            else:
                log.info("ablate: %s seed %d: training into %s", label(setting), seed, run_dir)
                train_fn(run_cfg, records_for(run_cfg, out, folds), run_dir)
                trained += 1
            runs[setting][seed] = run_dir
    log.info("ablate: %d run(s) trained, %d reused", trained, reused)
    result = table(cfg, base, runs, folds)
    result.update({"trained": trained, "reused": reused, "seeds": seed_list, "folds_csv": str(folds),
                   "varied": {k: v for k, v in varies}})
    return result


def label(setting: Setting) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting)


def _oof(run_dir: Path) -> pd.Series:
    oof = internal_ids(pd.read_csv(run_dir / "oof.csv", dtype={c: "string" for c in ID_COLUMNS}))
    return oof.set_index(ID)[["target", "pred"]]


def table(cfg: Config, base: Setting, runs: dict[Setting, dict[int, Path]], folds: Path) -> dict[str, Any]:
    """Rows of the table: per-seed scores (the runs' metric: AUC, or pAUC for ISIC 2024; the `auc_*` keys hold it),
    mean and t-interval over seeds, paired difference against the base."""
    from melanoma.data.runs import headline, read_metrics  # scikit-learn: not when the CLI starts
    from melanoma.report import metrics as M
    from melanoma.report.evaluate import compare_pair

    metric = headline(read_metrics(next(iter(runs[base].values()))))[0]
    folds_table = internal_ids(pd.read_csv(folds, dtype={**{c: "string" for c in ID_COLUMNS}, PATIENT: "string"}))
    patients = folds_table.set_index(ID)[PATIENT]
    n_boot = cfg.report.bootstrap
    boot_seed = cfg.seed if cfg.report.seed is None else cfg.report.seed
    rows = []
    for setting, by_seed in runs.items():
        oofs = {s: _oof(p) for s, p in by_seed.items()}
        aucs = {s: M.ranking_metrics(o[TARGET].to_numpy(), o["pred"].to_numpy())[metric] for s, o in oofs.items()}
        row: dict[str, Any] = {"setting": label(setting), **dict(setting), "base": setting == base,
                               **{f"auc_seed{s}": a for s, a in aucs.items()}}
        row.update(seed_interval(list(aucs.values())))
        if setting != base:
            base_oofs = {s: _oof(p) for s, p in runs[base].items()}
            row.update(paired(oofs, base_oofs, patients, n_boot, boot_seed, compare_pair, metric))
        rows.append(row)
    return {"rows": rows, "bootstrap": n_boot, "metric": metric,
            "p_value": f"paired patient bootstrap of the mean over seeds of the {metric} difference (two-sided)"}


def seed_interval(aucs: list[float]) -> dict[str, Any]:
    """Mean over seeds and its 95% t-interval (none with one seed), clipped to [0, 1] where an AUC can lie: with
    two or three seeds the t quantile (12.7 with two) can stretch it past both ends."""
    from scipy.stats import t

    a = np.asarray([x for x in aucs if x is not None], dtype=np.float64)
    mean = float(a.mean()) if a.size else None
    if a.size < 2:
        return {"mean_auc": mean, "ci_low": None, "ci_high": None}
    half = float(t.ppf(0.975, a.size - 1) * a.std(ddof=1) / np.sqrt(a.size))
    return {"mean_auc": mean, "ci_low": max(0.0, mean - half), "ci_high": min(1.0, mean + half)}


def paired(oofs: dict[int, pd.DataFrame], base_oofs: dict[int, pd.DataFrame], patients: pd.Series, n_boot: int,
           boot_seed: int, compare_pair, metric: str = "auc") -> dict[str, Any]:
    """Mean over seeds of the AUC difference against the base on the same seed and images, its patient-bootstrap
    interval and p-value, and each seed's `compare` (DeLong p)."""
    from melanoma.report import metrics as M

    seeds = sorted(set(oofs) & set(base_oofs))
    common = sorted(set.intersection(*(set(oofs[s].index) & set(base_oofs[s].index) for s in seeds)))
    if not common:
        raise InputError("ablate: a setting and the base runs share no OOF image_name")
    y = base_oofs[seeds[0]].loc[common, TARGET].to_numpy(dtype=np.float64)
    codes = M.cluster_codes(patients.reindex(common).to_numpy())
    per_seed, diffs = {}, []
    for s in seeds:
        a, b = oofs[s].loc[common, "pred"].to_numpy(), base_oofs[s].loc[common, "pred"].to_numpy()
        if metric == "auc":
            res = compare_pair(y, a, b, codes, 0, boot_seed)  # the point difference and DeLong (AUC only)
            per_seed[s] = {"diff": res["diff"], "delong_p": res["delong"]["p"]}
        else:
            per_seed[s] = {"diff": M.ranking_metrics(y, a)[metric] - M.ranking_metrics(y, b)[metric], "delong_p": None}
        diffs.append(_boot_diffs(y, a, b, codes, n_boot, boot_seed, metric))  # same seed: the same patient draws
    mean_diff = float(np.mean([v["diff"] for v in per_seed.values()]))
    out: dict[str, Any] = {"diff_vs_base": mean_diff, "diff_ci_low": None, "diff_ci_high": None, "p_value": None,
                           "per_seed": per_seed}
    if n_boot:
        boot = np.mean(diffs, axis=0)
        boot = boot[np.isfinite(boot)]
        ci = M.interval(boot)
        if ci is not None:
            out["diff_ci_low"], out["diff_ci_high"] = ci
            out["p_value"] = float(min(1.0, 2 * min(np.mean(boot <= 0), np.mean(boot >= 0))))
    return out


def _boot_diffs(y, a, b, codes, n_boot: int, seed: int, metric: str = "auc") -> np.ndarray:
    """score(a) - score(b) on each patient resample (report/metrics.py's weights: the same seed, the same draws)."""
    from melanoma.report import metrics as M

    score = M.RANKING[metric]
    ra, oa = M.Ranked.of(y, a)
    rb, ob = M.Ranked.of(y, b)
    out = []
    for w in M.resample_weights(codes, n_boot, seed):
        out.append(score(*M.cumulative_counts(ra, w[:, oa])) - score(*M.cumulative_counts(rb, w[:, ob])))
    return np.concatenate(out) if out else np.zeros(0)


def _fmt(v: Any, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return ""
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def markdown(result: dict[str, Any]) -> str:
    seeds = result["seeds"]
    name = "pAUC" if result.get("metric") == "pauc" else "AUC"
    head = ["setting"] + [f"{name} seed {s}" for s in seeds] + ["mean", "95% CI (seeds)", "diff vs base",
                                                            "95% CI (patients)", "p"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        ci = f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if r["ci_low"] is not None else ""
        dci = (f"[{_fmt(r['diff_ci_low'], True)}, {_fmt(r['diff_ci_high'], True)}]"
               if r.get("diff_ci_low") is not None else "")
        diff = "base" if r["base"] else _fmt(r.get("diff_vs_base"), True)
        p = "" if r["base"] or r.get("p_value") is None else f"{r['p_value']:.3g}"
        cells = [r["setting"]] + [_fmt(r.get(f"auc_seed{s}")) for s in seeds] + [_fmt(r["mean_auc"]), ci, diff, dci, p]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_table(result: dict[str, Any], out: Path) -> str:
    md = markdown(result)
    rows = [{k: v for k, v in r.items() if k != "per_seed"} for r in result["rows"]]
    write_csv(out / "ablate.csv", pd.DataFrame(rows))
    write_text(out / "ablate.md", md + "\n")
    write_json(out / "ablate.json", result)
    return md


# ---------------------------------------------------------------- CLI

def _arguments(p) -> None:
    p.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2",
                   help="a config key and its values (repeatable: the grid is their product)")
    p.add_argument("--seeds", type=int, default=1, help="runs per setting: seeds SEED, SEED+1, ... (default 1)")
    p.add_argument("--out", type=Path, help="folder of the grid (default: PATHS.runs/ablate)")


def run_ablate_command(args: argparse.Namespace, load: Callable[..., Any]) -> None:
    cfg = load(args)
    varies = parse_vary(args.vary)
    out = args.out or Path(cfg.paths.runs) / "ablate"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file: choose another --out")
    result = run_grid(cfg, varies, args.seeds, out)
    print(write_table(result, out))
    print(f"\n{result['trained']} run(s) trained, {result['reused']} reused; table in {out / 'ablate.csv'}")


def _plan(args: argparse.Namespace, cfg) -> Plan:
    from melanoma.data.commands import prepare_inputs
    from melanoma.image.commands import train_inputs
    from melanoma.runtime.paths import resolve_paths

    out = args.out or Path(cfg.paths.runs) / "ablate"
    own = lambda q: (q / "ablate.json").is_file() or (q / "folds.run.json").is_file()  # noqa: E731
    return [Out(out, folder=True, own=own, writes=("ablate.csv", "ablate.md", "ablate.json", "folds.csv"))], \
        {**prepare_inputs(cfg, resolve_paths(cfg)), **train_inputs(cfg, None)}


COMMANDS = [
    Command("ablate", "a grid of settings x seeds on the same folds: one table of OOF AUCs against the base",
            _arguments, run_ablate_command, plan=_plan),
]
