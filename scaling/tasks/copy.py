"""Induction / copying of a random letter string: `copy_4`, `copy_8`, `copy_12`, `copy_16`.

Prompt "K xkqp|", gold "xkqp": every answer character is predictable only by looking back
at the string before the separator (induction heads).
"""

from scaling.tasks.base import Task

TASKS = [Task(f"copy_{n}", skill="copy", difficulty=n) for n in (4, 8, 12, 16)]
