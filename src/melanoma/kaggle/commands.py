"""`melanoma kaggle download|push|status|output|wheels|upload-models|notebook`, `melanoma submit` and `melanoma doctor`: their
flags, actions and output plans.

The CLI hands these over whole; this is the only place it reaches melanoma.kaggle.api.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from melanoma.config.command import Command, Group, Plan
from melanoma.config.flags import config_flags
from melanoma.names import kaggle_owner
from melanoma.outputs import DEBRIS, Out


log = logging.getLogger("melanoma")
# Written into a `kaggle output --out` folder after the download: it marks the folder as this command's, so a
# later call may replace its files (melanoma.outputs).
OUTPUT_MARKER = ".kaggle-output.json"


def _download_arguments(p) -> None:
    p.add_argument("--csv-only", action="store_true", help="only train.csv, test.csv, sample_submission.csv")
    p.add_argument("--tfrecords", type=int, metavar="SIZE",
                   help="also the public TFRecords at this image side (128, 192, 256, 384, 512, 768)")
    p.add_argument("--no-competition", action="store_true", help="only the TFRecords")
    p.add_argument("--out", type=Path, default=Path("data"),
                   help="folder for <competition>/ and melanoma-SxS/ (default: data)")


def _push_arguments(p) -> None:
    config_flags(p, "kaggle.accelerator", "kaggle.chain")
    p.add_argument("--dry-run", action="store_true", help="write the push folder, do not push")
    p.add_argument("--out", type=Path, default=Path("build/kaggle-kernel"), help="the push folder")
    p.add_argument("--kernels", type=Path, default=Path("kernels"), help="folder with notebook.ipy")
    p.add_argument("--competition", choices=("siim2020", "isic2024"), default="siim2020",
                   help="siim2020 (the training notebook, default) or isic2024 (its code competition)")
    p.add_argument("--kind", choices=("training", "inference"), default=None,
                   help="isic2024: inference (default; internet off, kernels/isic2024_inference.ipy)")
    p.add_argument("--bundle", metavar="OWNER/SLUG",
                   help="isic2024 inference: the models dataset `kaggle upload-models` made (default: "
                        "<owner>/melanoma-isic2024-models)")


def _kernel_argument(p) -> None:
    p.add_argument("kernel", nargs="?", help="USER/SLUG (default: kaggle.username/kaggle.slug)")


def _output_arguments(p) -> None:
    _kernel_argument(p)
    p.add_argument("--out", type=Path, help="folder to download into (default: runs/kaggle/SLUG)")


def _wheels_arguments(p) -> None:
    p.add_argument("--out", type=Path, default=Path("build/melanoma-wheels"), help="the dataset folder")
    p.add_argument("--python", default="3.12", help="the notebook image's Python (default 3.12)")
    p.add_argument("--platform", default="manylinux2014_x86_64", help="pip --platform of the image")
    p.add_argument("--owner", type=kaggle_owner,
                   help="dataset owner (default: kaggle.username or the credentials' user)")


def _upload_models_arguments(p) -> None:
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                   help="image runs (`train`) and at most one ISIC 2024 tabular run (`tabular`)")
    p.add_argument("--out", type=Path, default=Path("build/melanoma-isic2024-models"), help="the bundle folder")
    p.add_argument("--slug", default="melanoma-isic2024-models", type=kaggle_owner, help="the dataset's slug")
    p.add_argument("--owner", type=kaggle_owner,
                   help="dataset owner (default: kaggle.username or the credentials' user)")
    p.add_argument("--message", default=None, help="the new version's notes (default: the package version)")
    p.add_argument("--no-upload", action="store_true", help="build the bundle folder only")
    config_flags(p, "export.tfrecords", "train.devices.backend")


def _notebook_arguments(p) -> None:
    p.add_argument("--check", action="store_true", help="only check that they are up to date")
    p.add_argument("--kernels", type=Path, default=Path("kernels"))


def _submit_arguments(p) -> None:
    p.add_argument("file", type=Path, help="submission.csv")
    p.add_argument("--message", "-m", required=True, help="the submission's description")
    config_flags(p, "paths.sample_submission")
    p.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the score (default 120)")


def run_kaggle_command(args: argparse.Namespace, load: Callable[..., Any]) -> None:
    """The commands that talk to Kaggle (`load` reads the config as the CLI does)."""
    from melanoma.kaggle import api as kaggle, notebooks  # here, not at the top: `melanoma --help` stays fast

    action = args.kaggle_command if args.command == "kaggle" else "submit"
    if action == "notebook":
        stale = notebooks.build_notebooks(args.kernels, check=args.check)
        if args.check and stale:
            raise kaggle.KaggleError(f"{', '.join(map(str, stale))} out of date: run `melanoma kaggle notebook`")
        print("\n".join(f"wrote {p}" for p in stale) if stale and not args.check else "notebooks up to date")
        return
    cfg = load(args)
    k = cfg.kaggle
    api = creds = None
    if action == "wheels":  # builds files only: credentials just to name the owner when it is not given
        from melanoma.kaggle.wheels import build_wheels

        owner = args.owner or k.username or kaggle.check_credentials().username or "YOUR-KAGGLE-NAME"
        out = build_wheels(Path.cwd(), args.out, owner, python=args.python, platform=args.platform)
        print(f"wrote {out}: upload it with `kaggle datasets create -p {out}`, then set kaggle.wheels={owner}/"
              "melanoma-wheels and kaggle.internet=false")
        return
    if action == "upload-models":
        _upload_models(args, cfg, kaggle)
        return
    if action == "submit":  # a broken file is reported before (and without) any credentials
        _check_submission(args, cfg, kaggle)
    if action == "push" and args.competition == "isic2024" and not _inference(args):
        raise kaggle.KaggleError("kaggle push --competition isic2024: only the inference notebook is built "
                                 "(--kind inference); train with `melanoma run` and upload the models")
    if action == "push" and args.dry_run:  # no client needed; credentials only to name the kernel's owner
        creds = None if k.username else kaggle.check_credentials()
    else:
        api, creds = kaggle.connect()  # credentials first: one clear line before anything else runs
    if action == "download":
        files = kaggle.download(api, args.out, k.competition, args.csv_only, args.tfrecords, args.no_competition)
        print(f"{len(files)} file(s) downloaded into {args.out}")
    elif action == "push":
        (_push_inference if _inference(args) else _push)(args, cfg, api, creds, kaggle, notebooks)
    elif action in ("status", "output"):
        kid = args.kernel or notebooks.kernel_id(k, creds)
        if action == "status":
            st = kaggle.status(api, kid)
            print(f"{kid}: {st['status']}" + (f" ({st['failure_message']})" if st["failure_message"] else ""))
        else:
            out = args.out or Path("runs") / "kaggle" / kid.split("/")[-1]
            from melanoma.files import write_json

            write_json(Path(out) / OUTPUT_MARKER, {"kernel": kid})  # first: an interrupted download stays ours
            files = kaggle.output(api, kid, out)
            print(f"{len(files)} file(s) of {kid} in {out}")
    else:
        _submit(args, cfg, api, kaggle)


def _push(args: argparse.Namespace, cfg, api, creds, kaggle, notebooks) -> None:
    """The training notebook (kernels/notebook.ipy)."""
    src = args.kernels / notebooks.NOTEBOOK_SOURCE
    if not src.is_file():
        raise kaggle.KaggleError(f"{src}: notebook source not found (run from the repository root)")
    kid = notebooks.kernel_id(cfg.kaggle, creds)
    folder = notebooks.write_push_folder(cfg, args.out, kid, cfg.kaggle.accelerator, src.read_text())
    if args.dry_run:
        print(f"wrote {folder}/kernel-metadata.json and {notebooks.NOTEBOOKS['kaggle']} (not pushed)")
        return
    result = kaggle.push(api, folder)
    print(f"pushed {kid}: version {result['version_number']}, {result['url']}")


def _inference(args: argparse.Namespace) -> bool:
    return args.competition == "isic2024" and args.kind in (None, "inference")


def _push_inference(args: argparse.Namespace, cfg, api, creds, kaggle, notebooks) -> None:
    """The ISIC 2024 inference notebook: internet off, the wheels and bundle datasets attached."""
    src = args.kernels / notebooks.INFERENCE_SOURCE
    if not src.is_file():
        raise kaggle.KaggleError(f"{src}: notebook source not found (run from the repository root)")
    owner = cfg.kaggle.username or (creds.username if creds else None)
    if not owner:
        raise kaggle.KaggleError("no Kaggle username for the kernel id: set kaggle.username")
    accelerator = cfg.kaggle.accelerator
    if accelerator == "tpu":  # the code competition scores CPU or GPU notebooks; a T4 predicts tiles fast
        log.info("kaggle push: the ISIC 2024 inference notebook runs on a GPU (T4), not a TPU")
        accelerator = "gpu"
    kid = f"{owner}/melanoma-isic2024-inference"
    bundle = args.bundle or f"{owner}/melanoma-isic2024-models"
    folder = notebooks.write_inference_folder(cfg, args.out, kid, accelerator, src.read_text(), bundle)
    if args.dry_run:
        print(f"wrote {folder}/kernel-metadata.json and {notebooks.INFERENCE_NOTEBOOK} (not pushed)")
        return
    result = kaggle.push(api, folder)
    print(f"pushed {kid}: version {result['version_number']}, {result['url']}")


def _upload_models(args: argparse.Namespace, cfg, kaggle) -> None:
    """Build the bundle (credentials first unless --no-upload: one clear line before the export runs)."""
    from melanoma import __version__
    from melanoma.kaggle.bundle import build_bundle

    api = None
    if args.no_upload:
        owner = args.owner or cfg.kaggle.username or "YOUR-KAGGLE-NAME"
    else:
        api, creds = kaggle.connect()
        owner = args.owner or cfg.kaggle.username or creds.username
        if not owner:
            raise kaggle.KaggleError("no owner for the dataset: pass --owner or set kaggle.username")
    ref = f"{owner}/{args.slug}"
    build_bundle(cfg, args.runs, args.out, ref)
    if api is None:
        print(f"wrote {args.out} (not uploaded): `melanoma infer --bundle {args.out}` uses it as it is")
        return
    r = kaggle.upload_dataset(api, args.out, ref, args.message or f"melanoma {__version__}")
    print(f"{'created' if r['created'] else 'new version of'} {ref}: {r['url']}; push the notebook with "
          f"`melanoma kaggle push --competition isic2024 --bundle {ref}`")


def _check_submission(args: argparse.Namespace, cfg, kaggle) -> None:
    """The submission file must exist, parse and match the sample submission, before Kaggle is contacted."""
    from melanoma.runtime.paths import resolve_paths
    from melanoma.data.submission import check_submission_file  # pandas: only when submitting

    if not args.file.is_file():
        raise kaggle.KaggleError(f"{args.file}: not found")
    sample_path = resolve_paths(cfg).sample_submission
    if sample_path is None:
        raise kaggle.KaggleError("no sample submission to validate against: pass --sample-submission PATH")
    n = check_submission_file(args.file, sample_path)
    log.info("submit: %s matches %s (%d ids)", args.file, sample_path, n)


def _submit(args: argparse.Namespace, cfg, api, kaggle) -> None:
    r = kaggle.submit(api, args.file, args.message, cfg.kaggle.competition, wait=args.wait)
    scores = ", ".join(f"{n} {r[n]}" for n in ("public_score", "private_score") if r[n] is not None)
    print(f"submitted {args.file}: status {r['status'] or 'unknown'}" + (f", {scores}" if scores else "")
          + (f", error: {r['error']}" if r["error"] else ""))


# ---------------------------------------------------------------- doctor

def _doctor_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-devices", action="store_true", help="do not import the backend to list its devices")


def _doctor(args: argparse.Namespace, load: Callable[..., Any]) -> None:
    import json

    from melanoma.kaggle.doctor import doctor, format_report

    report = doctor(load(args), devices=not args.no_devices)
    print(json.dumps(report, indent=2, default=str) if args.json else format_report(report))


# ---------------------------------------------------------------- output plans (melanoma.outputs.guard)

def _download_plan(args, cfg) -> Plan:
    from melanoma.runtime.datasets import TFRECORD_DATASETS

    out = Path(args.out)
    own = lambda q: (out / ".done").is_dir()  # noqa: E731  (the download's own markers)
    folders = [] if args.no_competition else [out / cfg.kaggle.competition]
    if args.tfrecords in TFRECORD_DATASETS:
        folders.append(out / TFRECORD_DATASETS[args.tfrecords].split("/")[1])
    return [Out(f, folder=True, own=own) for f in folders], {}


def _push_plan(args, cfg) -> Plan:
    return [Out(args.out, folder=True, own=lambda q: (q / "kernel-metadata.json").is_file())], \
        {"--kernels": args.kernels}


def _output_plan(args, cfg) -> Plan:
    if args.out is None:  # runs/kaggle/SLUG: a name the command owns
        return [], {}
    return [Out(args.out, folder=True, own=lambda q: (q / OUTPUT_MARKER).is_file())], {}


def _upload_models_plan(args, cfg) -> Plan:
    from melanoma.outputs import run_inputs

    own = lambda q: (q / "bundle.json").is_file() or (q / "dataset-metadata.json").is_file()  # noqa: E731
    return [Out(args.out, folder=True, own=own, writes=("bundle.json", "dataset-metadata.json", "tabular"))], \
        {"RUNS": run_inputs(args.runs)}


def _wheels_plan(args, cfg) -> Plan:
    own = lambda q: all(f.suffix == ".whl" or f.name == "dataset-metadata.json" or DEBRIS.match(f.name)  # noqa: E731
                        for f in q.iterdir())
    return [Out(args.out, folder=True, own=own)], {"the repository": [Path.cwd(), Path.cwd() / "requirements.txt",
                                                                       Path.cwd() / "pyproject.toml"]}


COMMANDS = [
    Group("kaggle", "download data, push the notebook, fetch its status and output"),
    Command("kaggle download", "competition files and public TFRecords, unzipped, resumable", _download_arguments,
            run_kaggle_command, plan=_download_plan),
    Command("kaggle push", "write kernel-metadata.json + the notebook and push them to Kaggle", _push_arguments,
            run_kaggle_command, plan=_push_plan),
    Command("kaggle status", "the status of the pushed notebook's latest run", _kernel_argument,
            run_kaggle_command, exempt="prints the notebook's status"),
    Command("kaggle output", "download the pushed notebook's output files", _output_arguments, run_kaggle_command,
            plan=_output_plan),
    Command("kaggle wheels", "a dataset folder of wheels for notebooks with the internet off", _wheels_arguments,
            run_kaggle_command, plan=_wheels_plan),
    Command("kaggle upload-models", "ISIC 2024: image runs (exported) + a tabular run's models -> a bundle folder "
            "and a private Kaggle dataset", _upload_models_arguments, run_kaggle_command, plan=_upload_models_plan,
            keras=True),
    Command("kaggle notebook", "regenerate kernels/*.ipynb from kernels/*.ipy", _notebook_arguments,
            run_kaggle_command, common=False,
            exempt="regenerates the fixed kernels/*.ipynb from kernels/notebook.ipy; no flag names an output"),
    Command("submit", "validate a submission against the sample submission, then submit it", _submit_arguments,
            run_kaggle_command, exempt="uploads a file; writes nothing"),
    Command("doctor", "where this runs, resolved paths, backend and devices, versions, and what the configured run "
            "lacks", _doctor_arguments, _doctor, exempt="prints a report", keras=True),
]
