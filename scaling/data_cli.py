"""`scaling data build|check`: build a corpus once, or prove a shard holds no probe instance."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scaling.config import ConfigError, load_config


def _build(args, overrides) -> int:
    from scaling.data.shards import build_corpus, read_manifest

    cfg = load_config(args.config, overrides)
    corpus_dir = build_corpus(cfg.data, Path(cfg.run.data_root))
    manifest = read_manifest(corpus_dir)
    print(f"corpus {corpus_dir}")
    for split, n in manifest["tokens"].items():
        print(f"  {split}: {n:,} tokens, sha256 {manifest['sha256'][split]}")
    return 0


def _check(args) -> int:
    from scaling.data.contamination import check_contamination
    from scaling.data.skills import SKILLS
    from scaling.data.skills.base import heldout_examples

    target = Path(args.shard)
    if not target.exists():
        raise FileNotFoundError(f"{target}: no such corpus directory or shard")
    probes = [ex for name, mod in SKILLS.items() for d in mod.DIFFICULTIES
              for ex in heldout_examples(name, d, args.n)]
    found = check_contamination(target, probes)
    print(f"checked {len(probes):,} held-out probe instances against {target}: "
          f"{len(found)} found in the training shard")
    for ex in found[:20]:
        print(f"  contaminated: {ex.skill} d={ex.difficulty}: {ex.text!r}")
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for `scaling data`."""
    p = argparse.ArgumentParser(prog="scaling data", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or reuse) the corpus of a config",
                       epilog="Overrides as --data.key=value, e.g. --data.train_tokens=2e6; "
                              "--run.data_root sets where corpora are cached.")
    b.add_argument("--config", help="YAML config (its data section is used)")
    c = sub.add_parser("check", help="check a corpus dir or .bin shard for probe instances "
                                     "(exit 1 if any is found)")
    c.add_argument("shard", help="corpus directory (its train.bin) or a uint16 .bin file")
    c.add_argument("--n", type=int, default=500, help="held-out instances per skill level")
    args, overrides = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.cmd == "build":
            return _build(args, overrides)
        if overrides:
            raise ConfigError(f"unexpected arguments {' '.join(overrides)}")
        return _check(args)
    except (ConfigError, ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
