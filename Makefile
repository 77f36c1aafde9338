# Thin wrappers; the logic lives in the kulit package.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DATA_ROOT ?= ../shared/data
MODEL   ?= models/kulit-skin8
HOST    ?= 127.0.0.1
PORT    ?= 8000

.PHONY: setup test test-fast lint demo data model paper bench bench-sources bench-device confound clean \
	fuzz schemathesis bench-hostile

$(BIN)/kulit: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch pinned in the same command so nothing pulls a CUDA build
	$(BIN)/pip install -q torch==2.13.0 -e '.[serve,train,dev,scale,clinic]'
	touch $(BIN)/kulit

# the on-device check: onnxruntime-web's WASM (npm, pinned) and the browser model, built here
setup: $(BIN)/kulit $(MODEL)/model-web.onnx
	scripts/vendor_ort_web.sh
	scripts/vendor_web_ui.sh

$(MODEL)/model-web.onnx: $(MODEL)/model.onnx $(MODEL)/card.json $(wildcard $(MODEL)/gate.npz) \
		$(wildcard $(MODEL)/model-int8.onnx) | $(BIN)/kulit
	$(BIN)/kulit export-web --model $(MODEL)

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src
	$(BIN)/pytest -q

test-fast: setup
	$(BIN)/pytest -q -m "not slow and not e2e"

# The fuzz properties of `make test` (tests/test_fuzz.py), longer and unseeded: ~5 min.
fuzz: setup
	KULIT_FUZZ_EXAMPLES=5000 $(BIN)/pytest -q -p no:cacheprovider tests/test_fuzz.py

# Schemathesis over every operation of the OpenAPI schema, 300 cases each: no 5xx.
schemathesis: setup
	KULIT_FUZZ_EXAMPLES=300 $(BIN)/pytest -q -p no:cacheprovider tests/test_schemathesis.py

# Hostile files against `kulit serve` on loopback: the audit's classes one by one, the corpus at
# concurrency 8, 2 min of 20 clients with 30% hostile (--duration for a shorter run)
bench-hostile: setup
	$(BIN)/python benchmarks/hostile.py --model $(MODEL)

lint: setup
	$(BIN)/ruff check src tests benchmarks

demo: setup
	$(BIN)/kulit serve --model $(MODEL) --host $(HOST) --port $(PORT)

data: setup
	$(BIN)/kulit build --until data

# Builds the shipped model (`kulit build`; sources and paths in kulit.config.BuildConfig): data,
# train (about 35 min on 2 cores), export, int8 if it agrees with fp32 on val, the trust gate,
# the shortlist, evaluate on test, the browser model. Steps whose inputs did not change are
# skipped; `kulit build --from gate` reruns from one step.
model: setup
	$(BIN)/kulit build --model $(MODEL)

# The paper's recipe, still reproducible on skin8 alone (its own split, no exclusions).
paper: setup
	$(BIN)/kulit data $(DATA_ROOT)/skin8 --out runs/data-skin8
	$(BIN)/kulit train --data $(DATA_ROOT) --split runs/data-skin8/split.csv --recipe paper \
		--out runs/paper

# accuracy.py trains both recipes from a cold cache (about 20 min); inference.py then compares
# ONNX Runtime with torch on that run's weights; serve.py loads the shipped model.
bench: setup
	$(BIN)/python benchmarks/accuracy.py --protocol paper-vs-kulit
	$(BIN)/python benchmarks/inference.py --model runs/bench/model-kulit --run runs/bench/kulit
	$(BIN)/python benchmarks/serve.py

# Train on skin8 / skin8-web / both from one two-folder split, score each on every source's test
# split (benchmarks/results/accuracy.json). SKIN8_MODEL=dir scores that skin8-only model instead
# of training one; SKIN8_SPLIT=csv is the split it was trained on (its photos are left out).
bench-sources: setup
	$(BIN)/python benchmarks/accuracy.py $(if $(SKIN8_MODEL),--reuse skin8=$(SKIN8_MODEL)) \
		$(if $(SKIN8_SPLIT),--trained-split skin8=$(SKIN8_SPLIT))

# int8 browser model vs float32 on the test split; first / later (offline) visit at 360 px
bench-device: data
	$(BIN)/python benchmarks/device.py --model $(MODEL) --split-csv runs/data/split.csv

# The source-confound study: the kulit recipe without the logo mask, against the shipped model.
confound: data
	$(BIN)/kulit train --data $(DATA_ROOT) --split runs/data/split.csv --recipe kulit \
		--no-mask-logo --out runs/ablation-nomask
	$(BIN)/kulit export runs/ablation-nomask --out runs/ablation-nomask/model
	$(BIN)/python benchmarks/confound.py --model $(MODEL) --model runs/ablation-nomask/model

clean:
	rm -rf runs .pytest_cache
