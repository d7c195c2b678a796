"""Registry of probe tasks: one module per task family, each defining `TASKS: list[Task]`.

Adding a probe task: write `scaling/tasks/<name>.py` with a `TASKS` list and add its module
name to `TASK_MODULES` below. It then appears in the native evaluator (`scaling eval`), the
lm-eval export (`scaling lm-eval export`) and the results, with no other edits.
Entries without a dot are modules of this package; dotted entries are imported as given
(tasks kept outside the package).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from scaling.tasks.base import GENERATE, LINE_START, MULTIPLE_CHOICE, Task

# One line per task module, in report order.
TASK_MODULES = [
    "addition",
    "addition_mc",
    "chain",
    "modular",
    "icl",
    "fewshot",
    "copy",
    "repeat",
]


class UnknownTaskError(ValueError):
    """A task name that is not in the registry (the message lists the valid ones)."""


def _module_tasks(entry: str) -> list[Task]:
    module = importlib.import_module(entry if "." in entry else f"scaling.tasks.{entry}")
    tasks = getattr(module, "TASKS", None)
    if not isinstance(tasks, (list, tuple)) or not all(isinstance(t, Task) for t in tasks):
        raise TypeError(f"task module {module.__name__} must define TASKS: a list of Task")
    return list(tasks)


def all_tasks() -> list[Task]:
    """The default task list, built from TASK_MODULES (ids are checked to be unique)."""
    tasks, seen = [], {}
    for entry in TASK_MODULES:
        for task in _module_tasks(entry):
            if task.id in seen:
                raise ValueError(f"task {task.id!r} is defined twice ({seen[task.id]} and "
                                 f"{entry})")
            seen[task.id] = entry
            tasks.append(task)
    return tasks


def get_tasks(names: str | Iterable[str | Task] | None = None) -> list[Task]:
    """Select tasks by name: None or "default" = all; else names or ids, comma-separated.

    A name selects every task of that name (`icl` = all shot counts); an id selects one
    (`icl_4shot`, `addition_3d`). Task objects are passed through (for ad-hoc tasks).
    Raises UnknownTaskError naming the unknown entries and the valid names.
    """
    registry = all_tasks()
    if names is None or (isinstance(names, str) and names.strip() in ("", "default", "all")):
        return registry
    if isinstance(names, str):
        names = names.split(",")
    chosen: list[Task] = []
    unknown: list[str] = []
    for name in names:
        if isinstance(name, Task):
            picked = [name]
        else:
            name = name.strip()
            if not name:
                continue
            picked = [t for t in registry if name in (t.id, t.name)]
            if not picked:
                unknown.append(name)
        chosen += [t for t in picked if t not in chosen]
    if unknown:
        valid = list(dict.fromkeys(t.name for t in registry))
        raise UnknownTaskError(f"unknown task(s) {', '.join(map(repr, unknown))}; valid: "
                               f"{', '.join(valid)} (or ids such as icl_4shot)")
    return chosen


__all__ = ["GENERATE", "LINE_START", "MULTIPLE_CHOICE", "TASK_MODULES", "Task",
           "UnknownTaskError", "all_tasks", "get_tasks"]
