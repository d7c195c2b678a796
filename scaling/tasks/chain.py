"""k-hop variable chains, 1 to 4 hops: `chain_1hop` .. `chain_4hop`.

Prompt "C b=a;a=7;d=3;c=b;e=d;c?", gold "7": resolve the query variable through k
assignments, with two distractor statements (chance 1/10).
"""

from scaling.tasks.base import Task

TASKS = [Task(f"chain_{k}hop", skill="chain", difficulty=k) for k in (1, 2, 3, 4)]
