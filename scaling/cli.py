"""The `scaling` command: one entry point, one subcommand per stage of the data flow.

Each subcommand lives in its own module and is imported only when used, so `scaling --help`
is instant and `scaling report` never imports torch.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, function, one-line help). Order is the order of the data flow.
COMMANDS = {
    "ladder": ("scaling.ladder_cli", "main",
               "run the default ladder end to end (sweep, then report); --list shows rungs"),
    "data": ("scaling.data_cli", "main", "build a corpus or check a shard for contamination"),
    "train": ("scaling.train", "main", "train (or resume) one rung"),
    "finetune": ("scaling.finetune", "main",
                 "fine-tune a checkpoint on one probe task (full, top_k) or tune a soft prompt"),
    "eval": ("scaling.evaluate", "main", "score every checkpoint of a run on the probe tasks"),
    "sweep": ("scaling.sweep", "main", "run a wandb sweep YAML locally, no W&B server needed"),
    "results": ("scaling.results_cli", "main",
                "results files: import-lm-eval turns lm-eval output of any model family "
                "into rows"),
    "report": ("analysis.report", "main", "fit, detect emergence and write reports/"),
    "lm-eval": ("scaling.lm_eval_backend", "cli_main",
                "lm-eval's CLI with the `scaling` model and the probe tasks registered"),
    "export": ("scaling.export", "main",
               "write a checkpoint as a transformers GPT-NeoX directory (Pythia's format)"),
}

USAGE = """usage: scaling COMMAND [ARGS...]

An emergent-ability scaling study: train a ladder of model sizes on identical data, score
every checkpoint on probe tasks, fit scaling curves and report which abilities emerge.

commands:
{listing}

Run `scaling COMMAND --help` for a command's options. Config fields are overridden as
--section.key=value (e.g. --model.size=s4 --train.tokens=2e6), the form wandb agents pass.
"""


def dispatch(argv: list[str], table: dict, usage: str, what: str, width: int) -> int:
    """Run the entry of `table` (name -> (module, function, help)) named by argv[0] with the
    rest of argv; print `usage` (its {listing} filled) for no name or --help."""
    listing = "\n".join(f"  {name:<{width}} {help_}" for name, (_, _, help_) in table.items())
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage.format(listing=listing))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in table:
        print(f"error: unknown {what} {name!r}; valid: {', '.join(table)}", file=sys.stderr)
        return 2
    module, func, _ = table[name]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


def main(argv: list[str] | None = None) -> int:
    """Dispatch `scaling COMMAND ...` to the command's module."""
    argv = sys.argv[1:] if argv is None else argv
    return dispatch(list(argv), COMMANDS, USAGE, "command", 9)


if __name__ == "__main__":
    sys.exit(main())
