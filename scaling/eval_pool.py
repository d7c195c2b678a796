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
`default_workers` is the number `--workers auto` starts.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator

import torch

from scaling.allocator import keep_freed_memory
from scaling.scorer import CheckpointScorer, PendingCheckpoint, resolve_device

_SCORER: CheckpointScorer | None = None  # each worker's scorer (set by _start_worker)


def default_workers(threads: int, device: str = "cpu") -> int:
    """Checkpoints to score at once by default: one per `threads` CPUs this process may use
    (both cores of a 2-core machine at the default of 1 thread); 1 on a GPU, and 1 with
    threads = 0 (torch's default: every CPU already)."""
    if resolve_device(device) != "cpu" or threads < 1:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // threads)


def _start_worker(threads: int, batch_size: int, device: str) -> None:
    global _SCORER
    # Ctrl-C is this process's parent's to handle: it stops every worker at once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_freed_memory()  # as `scaling eval` does in its own process
    if threads and device == "cpu":
        torch.set_num_threads(threads)
    _SCORER = CheckpointScorer(batch_size, device)


def _score(checkpoint: PendingCheckpoint) -> list[dict]:
    return _SCORER.rows(checkpoint)


def score_in_pool(plan: list[PendingCheckpoint], workers: int, threads: int, batch_size: int,
                  device: str, bar) -> Iterator[list[dict]]:
    """Rows of each checkpoint of `plan`, in plan order, scored by up to `workers`
    processes; `bar` counts each checkpoint's tasks as its rows arrive.

    An error in a worker (a corrupted checkpoint, say) is raised here when its checkpoint's
    turn comes, after the rows of every earlier checkpoint have been yielded; an error, an
    interrupt or an early stop ends every worker at once.
    """
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(min(workers, len(plan)), _start_worker, (threads, batch_size, device))
    try:
        for checkpoint, rows in zip(plan, pool.imap(_score, plan)):
            bar.set_postfix_str(f"step {checkpoint.meta['step']} done", refresh=False)
            bar.update(len(checkpoint.tasks))
            yield rows
        pool.close()
    finally:
        pool.terminate()
        pool.join()
