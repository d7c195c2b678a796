# Set-up and the two commands of the README. Everything installs into .venv with the pins of
# constraints.txt (the CPU wheel of torch 2.13.0 that lies on disk; never a CUDA build).
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_DATASETS_OFFLINE := 1
export HF_HUB_OFFLINE := 1

.PHONY: ladder quick seeds study test test-all report bench

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,lmeval,parquet,hf]"
	touch $@

ladder: $(VENV)/.installed  ## the main job: default ladder, end to end (train, eval, report)
	$(VENV)/bin/scaling ladder

quick: $(VENV)/.installed  ## a 4-rung, few-minute version of the main job
	$(VENV)/bin/scaling ladder --preset quick

seeds: $(VENV)/.installed  ## after `make ladder`: seeds 1 and 2 of s3..s6, report with the spread
	$(VENV)/bin/scaling ladder --preset seeds

study: $(VENV)/.installed  ## the shipped study in reports/: s0..s4 x 3 seeds at 6M tokens (see README)
	$(VENV)/bin/scaling ladder --preset study

test: $(VENV)/.installed  ## the default test run (slow and gpu tests excluded)
	$(PY) -m pytest -q

test-all: $(VENV)/.installed  ## every test, slow ones included
	$(PY) -m pytest -q -m "not gpu"

report: $(VENV)/.installed  ## regenerate reports/ (the study) and reports/ladder/ from their stored results
	$(VENV)/bin/scaling report --results reports/results.parquet --out reports
	$(VENV)/bin/scaling report --results reports/ladder/results.csv --out reports/ladder

bench: $(VENV)/.installed
	$(PY) bench/train_throughput.py
