"""Addition in multiple-choice form: `addition_mc_1d` .. `addition_mc_5d`.

Same instances as `addition_{d}d`; the model scores the gold sum and three distractors that
differ from it in one digit, by log-likelihood (chance 1/4).
"""

from scaling.tasks.base import MULTIPLE_CHOICE, Task

TASKS = [Task(f"addition_mc_{d}d", skill="addition", difficulty=d, kind=MULTIPLE_CHOICE)
         for d in (1, 2, 3, 4, 5)]
