"""Pure induction on a random letter string: `repeat_4`, `repeat_8`, `repeat_12`, `repeat_16`.

Prompt "R |xkqp|", gold "xkqp": every answer character, the first included, is the token
that followed the earlier occurrence of the current one (one induction head solves it;
`copy`'s first letter needs more, see scaling/data/skills/repeat.py).
"""

from scaling.tasks.base import Task

TASKS = [Task(f"repeat_{n}", skill="repeat", difficulty=n) for n in (4, 8, 12, 16)]
