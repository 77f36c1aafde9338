# Thin wrappers; the logic lives in the kulit package.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DATA    ?= ../shared/data/skin8
MODEL   ?= models/kulit-skin8
HOST    ?= 127.0.0.1
PORT    ?= 8000

.PHONY: setup test test-fast lint demo data model bench confound clean

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
	# int8 beside fp32 only if it agrees with fp32 on val (a refusal is printed, not fatal)
	-$(BIN)/kulit quantize $(MODEL) --split-csv runs/data/split.csv

# accuracy.py trains both recipes from a cold cache (about 20 min); inference.py then compares
# ONNX Runtime with torch on that run's weights; serve.py loads the shipped model.
bench: setup
	$(BIN)/python benchmarks/accuracy.py
	$(BIN)/python benchmarks/inference.py --model runs/bench/model-kulit --run runs/bench/kulit
	$(BIN)/python benchmarks/serve.py

# The source-confound study: the kulit recipe without the logo mask, against the shipped model.
confound: data
	$(BIN)/kulit train --data $(DATA) --split runs/data/split.csv --recipe kulit \
		--no-mask-logo --out runs/ablation-nomask
	$(BIN)/kulit export runs/ablation-nomask --out runs/ablation-nomask/model
	$(BIN)/python benchmarks/confound.py --model $(MODEL) --model runs/ablation-nomask/model

clean:
	rm -rf runs .pytest_cache
