# Thin wrappers; the logic lives in the kulit package.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DATA    ?= ../shared/data/skin8
MODEL   ?= models/kulit-skin8
HOST    ?= 127.0.0.1
PORT    ?= 8000

.PHONY: setup test test-fast lint demo data model bench clean

$(BIN)/kulit: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch pinned in the same command so nothing pulls a CUDA build
	$(BIN)/pip install -q torch==2.13.0 -e '.[serve,train,dev]'
	touch $(BIN)/kulit

setup: $(BIN)/kulit

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q

test-fast: setup
	$(BIN)/pytest -q -m "not slow and not e2e"

lint: setup
	$(BIN)/ruff check src tests benchmarks

demo: setup
	$(BIN)/kulit serve --model $(MODEL) --host $(HOST) --port $(PORT)

data: setup
	$(BIN)/kulit data $(DATA) --out runs/data

# Rebuilds the shipped model from scratch (about 20 min on 2 cores; the feature cache in
# .cache/kulit makes re-runs with other head settings fast).
model: data
	$(BIN)/kulit train --data $(DATA) --split runs/data/split.csv --recipe kulit --out runs/kulit
	$(BIN)/kulit export runs/kulit --out $(MODEL) --card-extra docs/skin8-card.json
	$(BIN)/kulit evaluate --model $(MODEL) --data $(DATA) --split-csv runs/data/split.csv \
		--split test --out $(MODEL)

bench: setup
	$(BIN)/python benchmarks/accuracy.py
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/serve.py

clean:
	rm -rf runs .pytest_cache
