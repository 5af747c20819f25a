"""The ``tubelet`` command.

Each area of the library adds its own subcommands through a ``register(subparsers)``
function; this module only collects them, so the command reads like the package layout.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

# Modules with a ``register(subparsers)`` function, in the order `tubelet --help` lists them.
COMMAND_MODULES = [
    "tubelet.models.commands",
    "tubelet.data.commands",
    "tubelet.convert.commands",
    "tubelet.train.commands",
    "tubelet.inference.commands",
    "tubelet.captions.commands",
    "tubelet.generate.commands",
    "tubelet.serve.commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tubelet", description="Video transformers (ViViT): models, weights, data, training.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"tubelet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _reject_unknown(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> None:
    """Exit 2 naming the unknown arguments, in the subcommand's usage, with the closest flag."""
    sub = parser._subparsers._group_actions[0].choices.get(args.command) if args.command else None
    target = sub or parser
    flags = [o for action in target._actions for o in action.option_strings]
    hints = [f"{x} -> {close[0]}" for x in extra if x.startswith("-")
             for close in [difflib.get_close_matches(x.split("=")[0], flags, n=1, cutoff=0.6)] if close]
    target.error(f"unrecognized arguments: {' '.join(extra)}"
                 + (f" (did you mean {', '.join(hints)}?)" if hints else ""))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _reject_unknown(parser, args, extra)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from .errors import TubeletError
    try:
        return int(args.func(args) or 0)
    except TubeletError as e:  # the one place errors become messages (exit 1: run failed, 2: usage)
        print(f"tubelet {args.command}: error: {e}", file=sys.stderr)
        return e.exit_status
    except FileNotFoundError as e:
        print(f"tubelet {args.command}: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `tubelet models | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as e:  # a run that stopped cleanly says how to continue
        print(f"tubelet {args.command}: interrupted" + (f": {e}" if str(e) else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
