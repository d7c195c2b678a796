"""Few-shot formatted arithmetic: task `fewshot` at 0, 1, 2 and 4 shots.

Prompt "Q: what is 3 plus 4? A: 7. Q: what is 12 plus 5? A: ", gold "17". Solved
demonstrations end with ". ", so greedy decoding also stops at ".".
"""

from scaling.tasks.base import LINE_START, Task

TASKS = [Task("fewshot", skill="fewshot", difficulty=k, shots=k, stop=(LINE_START, "."))
         for k in (0, 1, 2, 4)]
