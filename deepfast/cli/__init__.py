"""The `deepfast` command line (also `python -m deepfast`): one module per family of commands, each
adding its subcommands with ``add_parsers`` (the function to run set as ``func``)."""

from __future__ import annotations

import argparse
import sys

import deepfast
from deepfast import backends
from deepfast.cli import demo, info, robustness, training


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepfast",
        description="deepfast: generative imaging models and adversarial robustness, fast. "
        "`deepfast COMMAND --help` explains each command.",
    )
    parser.add_argument("--version", action="version", version=f"deepfast {deepfast.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (info, training, demo, robustness):
        module.add_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (backends.BackendUnavailable, ValueError, OSError) as exc:
        print(f"deepfast {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
