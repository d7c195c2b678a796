"""`scaling results SUBCOMMAND ...`: tools that write results files (schema: scaling/results.py).

    scaling results import-lm-eval RESULTS.json... --out FILE   # lm-eval output of any model
                                                                 # family -> results rows

Each subcommand lives in its own module and is imported only when used.
"""

from __future__ import annotations

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
{listing}

Run `scaling results SUBCOMMAND --help` for its options and worked examples.
"""


def main(argv: list[str] | None = None) -> int:
    """Dispatch `scaling results SUBCOMMAND ...`."""
    from scaling.cli import dispatch

    argv = list(sys.argv[1:] if argv is None else argv)
    return dispatch(argv, SUBCOMMANDS, USAGE, "`scaling results` subcommand", 15)


if __name__ == "__main__":
    sys.exit(main())
