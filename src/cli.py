"""``labelwise <command> [group=option ...] [key=value ...]``: the installed tool, one Hydra app per command.

``labelwise train loss=asymmetric`` is ``python -m src.train loss=asymmetric``, and so on for every command. Tab
completion: ``eval "$(labelwise -sc install=bash)"`` once per shell (or in ``~/.bashrc``); then ``labelwise <TAB>``
completes the command and ``labelwise train lo<TAB>`` its config groups and keys.
"""

from __future__ import annotations

import importlib
import os
import sys

from src import __version__

COMMANDS = {
    "train": ("src.train", "fine-tune a classifier: fit, tune thresholds, evaluate, report"),
    "eval": ("src.eval", "score a checkpoint on any labelled split"),
    "predict": ("src.predict", "label texts from a file or stdin"),
    "export": ("src.export", "a Hugging Face or ONNX model directory, or an MLflow (registry) model"),
    "demo": ("src.demo", "a web page to try a model (Gradio)"),
    "compare": ("src.compare", "rank a --multirun sweep's settings over seeds, with statistics"),
    "thresholds": ("src.thresholds", "choose a model's operating point on a split; writes a new checkpoint"),
}
COMPLETION = ("-sc", "--shell-completion")


def usage() -> str:
    lines = [f"labelwise {__version__}", "", "usage: labelwise <command> [group=option ...] [key=value ...]", "",
             "commands:"]
    lines += [f"  {name:10s} {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "labelwise <command> --help shows a command's config groups and options;",
              'eval "$(labelwise -sc install=bash)" turns on tab completion.']
    return "\n".join(lines)


def run(command: str, args: list[str]) -> None:
    """The command's Hydra app on ``args``; ``sys.argv[0]`` is the tool's name, which Hydra's completion uses."""
    module = importlib.import_module(COMMANDS[command][0])
    sys.argv = ["labelwise", *args]
    module.main()


def complete(args: list[str]) -> None:
    """Shell completion: the command word here, the rest by the command's own Hydra app on the line without it."""
    line = os.environ.get("COMP_LINE")
    if line is None:  # -sc install=bash / uninstall=bash: any app prints the same script
        return run("train", args)
    words = line.split()
    if len(words) == 1 or (len(words) == 2 and not line.endswith(" ")):
        prefix = words[1] if len(words) == 2 else ""
        print(" ".join(name for name in COMMANDS if name.startswith(prefix)))
        return None
    command = words[1]
    if command in COMMANDS:
        os.environ["COMP_LINE"] = words[0] + line.split(command, 1)[1]
        run(command, args)
    return None


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMPLETION:
        return complete(args)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return None
    if args[0] in ("-V", "--version"):
        print(f"labelwise {__version__}")
        return None
    command, *rest = args
    if command not in COMMANDS:
        raise SystemExit(f"error: unknown command {command!r}; commands: {', '.join(COMMANDS)} "
                         "(labelwise --help lists them)")
    return run(command, rest)


if __name__ == "__main__":
    main()
