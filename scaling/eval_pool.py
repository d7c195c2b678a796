"""Score several checkpoints of a run at once, one worker process each (`scaling eval
--workers N`).

Evaluation runs at one thread by default (a second thread gains little on its small
matmuls), so a standalone `scaling eval` on a 2-core machine left a core idle. Checkpoints
are independent, so each worker process loads one checkpoint, scores it on its pending
tasks and sends the rows back; this process writes them checkpoint by checkpoint, in step
order, as `scaling eval` does with one worker, so results.csv comes out the same.

Workers are started with `spawn` (a fork of a process that has started torch's OpenMP
threads can hang) and kept for the whole run, so each draws and tokenizes the task
instances once. They see the registered tasks and skills of a fresh import of `scaling`.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Iterator

_SCORER = None  # each worker's CheckpointScorer (set by _start_worker)


def _start_worker(threads: int, batch_size: int, device: str) -> None:
    import torch

    from scaling.allocator import keep_freed_memory
    from scaling.evaluate import CheckpointScorer

    global _SCORER
    # Ctrl-C is this process's parent's to handle: it stops every worker at once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_freed_memory()  # as `scaling eval` does in its own process
    if threads and device == "cpu":
        torch.set_num_threads(threads)
    _SCORER = CheckpointScorer(batch_size, device)


def _score(entry: tuple) -> list[dict]:
    return _SCORER.rows(*entry)


def score_in_pool(plan: list, workers: int, threads: int, batch_size: int, device: str,
                  bar) -> Iterator[list[dict]]:
    """Rows of each (path, meta, run, pending tasks) entry of `plan`, in plan order, scored
    by up to `workers` processes; `bar` counts each checkpoint's tasks as its rows arrive.

    An error in a worker (a corrupted checkpoint, say) is raised here when its checkpoint's
    turn comes, after the rows of every earlier checkpoint have been yielded; an error, an
    interrupt or an early stop ends every worker at once.
    """
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(min(workers, len(plan)), _start_worker, (threads, batch_size, device))
    try:
        for (_, meta, _, pending), rows in zip(plan, pool.imap(_score, plan)):
            bar.set_postfix_str(f"step {meta['step']} done", refresh=False)
            bar.update(len(pending))
            yield rows
        pool.close()
    finally:
        pool.terminate()
        pool.join()
