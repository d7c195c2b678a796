"""In-context learning of a fresh key -> digit mapping: task `icl` at 0, 1, 2, 4 and 8 shots.

Prompt "I q>3 x>7 q>", gold "3": every line draws a new mapping, so only the demonstrations
in the prompt help. The shot count is the results `shots` column (chance 1/10).
"""

from scaling.tasks.base import Task

TASKS = [Task("icl", skill="icl", difficulty=k, shots=k) for k in (0, 1, 2, 4, 8)]
