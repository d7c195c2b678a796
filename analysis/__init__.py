"""Analysis of stored results: fits, emergence verdicts, mirage check, backtest, report.

Reads results only (`scaling.results.load`), never checkpoints and never torch, so it works
on any model family's scores in the results schema. Entry point: `analysis.report.main`
(`scaling report --results PATH --out DIR`).
"""
