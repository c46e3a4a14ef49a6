"""The `melanoma` command: a thin layer that turns flags into config values and calls one stage.

The commands come from the registry (melanoma.commands): each is declared in its own package with its flags, its
action and its output plan (melanoma.config.command); this module only builds the parser and dispatches.

Every command takes `--config FILE` and repeatable `--set key.path=value`; its own flags are shortcuts for
config keys and win over both. Errors in input or config print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from melanoma import __version__
from melanoma import commands as registry
from melanoma.config.command import Command, Group
from melanoma.config.flags import Parser, common, config_values
from melanoma.errors import MelanomaError
from melanoma.outputs import force_flag

log = logging.getLogger("melanoma")


def build_parser(commands: list[Command | Group] | None = None) -> argparse.ArgumentParser:
    """The parser of every command in the registry (melanoma.commands); each leaf knows its Command."""
    parser = Parser(prog="melanoma", description="SIIM-ISIC melanoma pipeline: "
                                     "folds -> prepare -> train -> tabular -> blend")
    parser.add_argument("--version", action="version", version=f"melanoma {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = {}
    for c in registry.COMMANDS if commands is None else commands:
        if isinstance(c, Group):  # `kaggle`, `segment`: the actions are the Commands named "GROUP ACTION"
            g = sub.add_parser(c.name, help=c.help)
            groups[c.name] = g.add_subparsers(dest=f"{c.name}_command", required=True, metavar="ACTION")
            continue
        group, _, word = c.name.rpartition(" ")
        p = (groups[group] if group else sub).add_parser(word, help=c.help)
        if c.common:
            common(p)
        c.add_arguments(p)
        if c.plan is not None:
            force_flag(p)  # a command that writes: --force replaces what it did not write itself
        p.set_defaults(_command=c)
    return parser


def _load(args: argparse.Namespace):
    """The config: defaults, --config, --set, then the command's flags (config_values); then the output guard and,
    for a command that may import Keras, the backend (before Keras is first imported)."""
    from melanoma.config import apply_overrides, load_config

    cfg = apply_overrides(load_config(args.config, args.overrides), config_values(args))
    cmd: Command = args._command
    if cmd.plan is not None:  # the outputs against the inputs, before any work (melanoma.outputs)
        from melanoma.outputs import guard

        outputs, inputs = cmd.plan(args, cfg)
        guard(cmd.name, outputs, inputs, force=bool(getattr(args, "force", False)))
    if cmd.keras:
        from melanoma.runtime.backend import use_backend
        from melanoma.runtime.devices import check_devices

        backend = use_backend(cfg.train.devices.backend, cfg.train.devices.cpu_replicas)
        if cmd.devices is not None:  # the commands that train (train, run)
            from melanoma.runtime.hosts import start_hosts

            start_hosts(cfg.train.devices.hosts, backend)  # a pod slice's hosts join before the devices are listed
        if cmd.devices is not None and cmd.devices(cfg):
            # A TPU that is not there is refused here, in seconds, before TensorFlow or any stage is loaded.
            check_devices(cfg.train.devices.tpu, cfg.train.devices.allow_cpu_fallback, backend)
    return cfg


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    nul = next((a for a in argv if "\x00" in a), None)
    if nul is not None:  # no path or value may hold one (the file system would raise ValueError)
        print(f"melanoma: error: argument {nul!r} holds a NUL character", file=sys.stderr)
        return 2
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # a bad flag (status 2, one line already printed), or --help / --version (0)
        return e.code if isinstance(e.code, int) else 2
    # Quiet TensorFlow's C++ start-up logging and Keras' dataset notices before either is imported.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    try:
        args._command.run(args, _load)
    except MelanomaError as e:
        print(f"melanoma: error: {_one_line(e)}", file=sys.stderr)
        return e.exit_status  # 2: input or config; 3: the environment (melanoma.errors)
    except OSError as e:  # the file system refused (read-only folder, a file where a folder should be, disk full)
        where = f"{e.filename}: " if e.filename else ""
        print(f"melanoma: error: {where}{_one_line(e.strerror or e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("melanoma: interrupted", file=sys.stderr)
        return 130
    return 0


def _one_line(message) -> str:
    """Errors print as one line, whatever text (a pandas parser message, a path) went into them."""
    return " ".join(str(message).split())


if __name__ == "__main__":
    sys.exit(main())
