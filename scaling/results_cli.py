"""`scaling results SUBCOMMAND ...`: tools that write results files (schema: scaling/results.py).

    scaling results import-lm-eval RESULTS.json... --out FILE   # lm-eval output of any model
                                                                 # family -> results rows

Each subcommand lives in its own module and is imported only when used.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, function, one-line help)
SUBCOMMANDS = {
    "import-lm-eval": ("scaling.import_lm_eval", "main",
                       "lm-eval's results_*.json of the probe tasks -> results rows"),
}

USAGE = """usage: scaling results SUBCOMMAND [ARGS...]

Results files hold one row per (run, step, task, shots, metric); `scaling report --results
FILE` reads them, whatever produced them.

subcommands:
{subcommands}

Run `scaling results SUBCOMMAND --help` for its options and worked examples.
"""


def main(argv: list[str] | None = None) -> int:
    """Dispatch `scaling results SUBCOMMAND ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    listing = "\n".join(f"  {name:<15} {help_}" for name, (_, _, help_) in SUBCOMMANDS.items())
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE.format(subcommands=listing))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"error: unknown subcommand {name!r} of `scaling results`; subcommands: "
              f"{', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module, func, _ = SUBCOMMANDS[name]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
