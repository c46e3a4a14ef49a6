"""`melanoma kaggle download|push|status|output|wheels|notebook` and `melanoma submit`: their flags and actions.

The CLI hands these over whole; this is the only place it reaches melanoma.kaggle.api.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from melanoma.config.flags import common, config_flags
from melanoma.names import kaggle_owner


log = logging.getLogger("melanoma")
# Written into a `kaggle output --out` folder after the download: it marks the folder as this command's, so a
# later call may replace its files (melanoma.outputs).
OUTPUT_MARKER = ".kaggle-output.json"


def add_kaggle_parsers(sub) -> None:
    """`melanoma kaggle download|push|status|output|notebook` and `melanoma submit`."""
    k = sub.add_parser("kaggle", help="download data, push the notebook, fetch its status and output")
    ksub = k.add_subparsers(dest="kaggle_command", required=True, metavar="ACTION")
    p = ksub.add_parser("download", help="competition files and public TFRecords, unzipped, resumable")
    common(p)
    p.add_argument("--csv-only", action="store_true", help="only train.csv, test.csv, sample_submission.csv")
    p.add_argument("--tfrecords", type=int, metavar="SIZE",
                   help="also the public TFRecords at this image side (128, 192, 256, 384, 512, 768)")
    p.add_argument("--no-competition", action="store_true", help="only the TFRecords")
    p.add_argument("--out", type=Path, default=Path("data"),
                   help="folder for <competition>/ and melanoma-SxS/ (default: data)")
    p = ksub.add_parser("push", help="write kernel-metadata.json + the notebook and push them to Kaggle")
    common(p)
    config_flags(p, "kaggle.accelerator", "kaggle.chain")
    p.add_argument("--dry-run", action="store_true", help="write the push folder, do not push")
    p.add_argument("--out", type=Path, default=Path("build/kaggle-kernel"), help="the push folder")
    p.add_argument("--kernels", type=Path, default=Path("kernels"), help="folder with notebook.ipy")
    for name, help_ in (("status", "the status of the pushed notebook's latest run"),
                        ("output", "download the pushed notebook's output files")):
        p = ksub.add_parser(name, help=help_)
        common(p)
        p.add_argument("kernel", nargs="?", help="USER/SLUG (default: kaggle.username/kaggle.slug)")
        if name == "output":
            p.add_argument("--out", type=Path, help="folder to download into (default: runs/kaggle/SLUG)")
    p = ksub.add_parser("wheels", help="a dataset folder of wheels for notebooks with the internet off")
    common(p)
    p.add_argument("--out", type=Path, default=Path("build/melanoma-wheels"), help="the dataset folder")
    p.add_argument("--python", default="3.12", help="the notebook image's Python (default 3.12)")
    p.add_argument("--platform", default="manylinux2014_x86_64", help="pip --platform of the image")
    p.add_argument("--owner", type=kaggle_owner,
                   help="dataset owner (default: kaggle.username or the credentials' user)")
    p = ksub.add_parser("notebook", help="regenerate kernels/*.ipynb from kernels/notebook.ipy")
    p.add_argument("--check", action="store_true", help="only check that they are up to date")
    p.add_argument("--kernels", type=Path, default=Path("kernels"))

    p = sub.add_parser("submit", help="validate a submission against the sample submission, then submit it")
    common(p)
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
    if action == "submit":  # a broken file is reported before (and without) any credentials
        _check_submission(args, cfg, kaggle)
    if action == "push" and args.dry_run:  # no client needed; credentials only to name the kernel's owner
        creds = None if k.username else kaggle.check_credentials()
    else:
        api, creds = kaggle.connect()  # credentials first: one clear line before anything else runs
    if action == "download":
        files = kaggle.download(api, args.out, k.competition, args.csv_only, args.tfrecords, args.no_competition)
        print(f"{len(files)} file(s) downloaded into {args.out}")
    elif action == "push":
        src = args.kernels / notebooks.NOTEBOOK_SOURCE
        if not src.is_file():
            raise kaggle.KaggleError(f"{src}: notebook source not found (run from the repository root)")
        kid = notebooks.kernel_id(k, creds)
        folder = notebooks.write_push_folder(cfg, args.out, kid, k.accelerator, src.read_text())
        if args.dry_run:
            print(f"wrote {folder}/kernel-metadata.json and {notebooks.NOTEBOOKS['kaggle']} (not pushed)")
            return
        result = kaggle.push(api, folder)
        print(f"pushed {kid}: version {result['version_number']}, {result['url']}")
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
