"""How often each verdict is right on synthetic ladders of known truth.

    python bench/verdict_rates.py [--draws 200] [--bootstrap 100]

For every case of `analysis.synthetic.CASES` (sharp and gradual emergence on 4-12 rungs,
smooth and weak trends, flat at chance and 0 -> chance, an outlier rung, U shapes, seed
replicates) it draws `--draws` seeded ladders, classifies each with
`analysis.emergence.classify` and prints the share of each verdict, the coverage of the
threshold intervals (emergent truths), whether the planted outlier was named and whether
`holds_across_seeds` was right; then the precision and recall of training-dynamics
transitions (ten generic tasks and one real late jump per run). tests/test_verdict_rates.py
asserts the same rates with fewer draws.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from analysis import synthetic


def main() -> None:
    """Print the rate table."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--draws", type=int, default=200, help="draws per case (default 200)")
    p.add_argument("--bootstrap", type=int, default=100,
                   help="bootstrap refits for the intervals (default 100; 0 skips coverage)")
    p.add_argument("--dynamics-draws", type=int, default=20,
                   help="ladders of 3 runs for the dynamics rates (default 20)")
    args = p.parse_args()
    print("| case | truth | right | verdicts | interval coverage | outlier named | "
          "seeds right | ms/draw |\n|---|---|---|---|---|---|---|---|")
    for name, (case, truth) in synthetic.CASES.items():
        t0 = time.perf_counter()
        r = synthetic.rates(case, args.draws, n_boot=args.bootstrap if truth == "emergent"
                            else 0)
        ms = (time.perf_counter() - t0) / args.draws * 1e3
        shares = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.verdicts.items(),
                                                              key=lambda kv: -kv[1]))
        cells = [f"{x:.2f}" if np.isfinite(x) else "" for x in
                 (r.coverage, r.outlier_named, r.seeds_right)]
        print(f"| {name} | {truth} | {r.share(truth):.2f} | {shares} | " + " | ".join(cells)
              + f" | {ms:.1f} |", flush=True)
    precision, recall = synthetic.dynamics_rates(args.dynamics_draws)
    print(f"\ntraining dynamics ({args.dynamics_draws} ladders x 3 runs, 10 generic tasks + 1 "
          f"late jump each): precision {precision:.2f}, recall {recall:.2f}")


if __name__ == "__main__":
    main()
