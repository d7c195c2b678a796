"""Modular arithmetic, (a op b) mod m for m in 5, 7, 11, 13: `modular_5` .. `modular_13`.

Prompt "M 9*4%7=", gold "1" (chance 1/m). The fact tables are small (300..507 facts) and
10% of them are held out, so these tasks have 30..60 instances each.
"""

from scaling.tasks.base import Task

TASKS = [Task(f"modular_{m}", skill="modular", difficulty=m) for m in (5, 7, 11, 13)]
