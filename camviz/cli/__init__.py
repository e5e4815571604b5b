"""The ``camviz`` command: each subcommand parses its options, calls the library, prints.

    camviz run photos/ --model resnet50 --topk 5 --out out/photos
    camviz eval --model demo --data demo:test:200
    camviz scan --model demo --data demo:test:200 --out stats.npz
    camviz dissect --model demo --data demo:test:200 --out out/dissect
    camviz fine-tune --model demo-fc --to-gap --data demo:train:2000 --out fc.safetensors
    camviz fit-head --model demo --data demo-novel:train:200 --out novel.safetensors

Errors camviz raises on purpose (:class:`~camviz.errors.CamvizError`) print one line and exit
with code 2; an interrupt exits with 130 and the same command resumes.

Example:
    >>> build_parser().parse_args(["run", "a.jpg", "--out", "o"]).topk
    5
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import warnings
from collections.abc import Sequence

from camviz.errors import CamvizError

__all__ = ["build_parser", "main", "COMMANDS"]

#: Modules that add subcommands, each with ``register(subparsers)``.
COMMANDS = [
    "camviz.cli.run", "camviz.cli.evaluate", "camviz.cli.units", "camviz.cli.figure",
    "camviz.cli.finetune", "camviz.cli.heads",
]


class _Parser(argparse.ArgumentParser):
    """Bad options are one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"camviz: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``camviz`` with every subcommand registered.

    Example:
        >>> sorted(build_parser()._subparsers._group_actions[0].choices)[:3]
        ['demo', 'dissect', 'eval']
    """
    parser = _Parser(prog="camviz", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in COMMANDS:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, and turn any CamvizError into a one-line message and exit 2."""
    args = build_parser().parse_args(argv)
    # SIGTERM (a scheduler's stop) unwinds like an interrupt, so partial files are removed
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line
            return int(args.func(args) or 0)
    except CamvizError as err:
        print(f"camviz: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("camviz: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """A warning as one line on stderr, like the errors (not the source line it came from)."""
    print(f"camviz: warning: {message}", file=sys.stderr)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
