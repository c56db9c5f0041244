"""``rnnray COMMAND ...`` (or ``python -m rnnray COMMAND ...``): one command for every stage.

Each subcommand is its module's own command line, so ``rnnray zoo build FILE`` and
``python -m rnnray.zoo build FILE`` are the same program with the same options and exit codes.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function taking argv, one line of help)
COMMANDS = {
    "sweep": ("rnnray.job", "main", "the main job: build the zoo if needed, sweep the encoders, evaluate, report"),
    "zoo": ("rnnray.zoo.__main__", "main", "build a zoo with Ray Data, or summarise one (build | info)"),
    "train": ("rnnray.train.command", "main", "train one encoder by emulation on Ray Train"),
    "evaluate": ("rnnray.evaluate", "main", "downstream evaluation of a sweep's best encoders"),
    "report": ("rnnray.report", "main", "the report and figures of a sweep"),
    "compare": ("rnnray.report.compare", "main", "one table across sweep folders: the settings that differ, encoders against the oracles"),
    "bench": ("rnnray.bench", "main", "benchmarks and the GPU check (zoo | train | profile | device)"),
}


def usage() -> str:
    from . import __version__

    width = max(map(len, COMMANDS))
    lines = [f"rnnray {__version__}: learning representations of recurrent-network weights, on Ray", "",
             "usage: rnnray COMMAND [ARGS ...]    (rnnray COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "  --version  print the version"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else 2)
    if argv[0] == "--version":
        from . import __version__

        print(f"rnnray {__version__}")
        sys.exit(0)
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)} (rnnray --help)", file=sys.stderr)
        sys.exit(2)
    module, function, _ = COMMANDS[argv[0]]
    sys.argv = [f"rnnray {argv[0]}", *argv[1:]]
    rc = getattr(importlib.import_module(module), function)(argv[1:])
    sys.exit(rc or 0)


if __name__ == "__main__":
    main()
