"""Multi-digit addition, 1 to 5 digits per operand: `addition_1d` .. `addition_5d`.

Prompt "A 57+68=", gold "521" (the sum written least-significant digit first, as in the
corpus). 1-digit addition has only 100 facts, about 10 of them held out, so `addition_1d`
has fewer than `n` instances.
"""

from scaling.tasks.base import Task

TASKS = [Task(f"addition_{d}d", skill="addition", difficulty=d) for d in (1, 2, 3, 4, 5)]
