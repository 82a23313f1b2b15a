# Everything a fresh machine needs, in two commands:
#   make serve   # venv + pinned deps + demo model (built once), then the function on :8080
#   make test    # venv + pinned deps, then lint and the whole test suite
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8080
PYTEST_ARGS ?=
BENCH_ARGS ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install tools node-deps demo serve browser test test-fast test-pythons lint bench clean rehearse

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	# tensorflow-serving-api declares a dependency on the full tensorflow package; its protos
	# need only tensorflow-cpu, already installed above.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		tensorflow-serving-api==2.21.0
	# The protocol tests drive the function with tritonclient's and KServe's own clients.
	# tritonclient caps ml-dtypes (<=0.5.4) and greenlet (<3.4) below our pins and kserve caps
	# protobuf below 7 (TensorFlow needs 7); both clients work on the pinned versions, so they
	# go in without deps, and what their HTTP clients import is pinned in requirements.lock.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		tritonclient==2.73.0 kserve==0.21.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		--no-build-isolation -e .
	touch $(STAMP)

# aws-sam-cli pins click, watchdog and boto3 below what the function uses, so the SAM CLI
# (sam validate --lint, the Lambda Runtime Interface Emulator it ships) lives in its own venv.
TOOLS := .venv-tools
$(TOOLS)/.installed: requirements-tools.lock
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	printf '*\n' > $(TOOLS)/.gitignore
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-tools.lock
	touch $@

install: $(STAMP)

# The mini-program sample's checking tools (TypeScript, miniprogram-api-typings), pinned by
# examples/miniprogram/package-lock.json, from the npm registry.
MINIPROGRAM := examples/miniprogram
$(MINIPROGRAM)/node_modules/.package-lock.json: $(MINIPROGRAM)/package.json $(MINIPROGRAM)/package-lock.json
	cd $(MINIPROGRAM) && npm ci --no-audit --no-fund

node-deps: $(MINIPROGRAM)/node_modules/.package-lock.json

tools: $(TOOLS)/.installed

demo: install
	$(BIN)/modelprep demo

serve: demo
	DEMO_PAGE=$${DEMO_PAGE:-true} $(BIN)/python -m functions.serving --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/python -m mypy

browser:
	bash examples/ci/install-chromium.sh || echo "chromium not installed: the browser tests will skip"

test: lint browser tools node-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The deploy rehearsals alone (also part of `make test`): Cloud Functions from the committed
# tree under each Python 3.11-3.13 present, every Dockerfile without an engine, gs:// models.
rehearse: install tools
	$(BIN)/python -m pytest tests/deploy tests/gcp $(PYTEST_ARGS)

# The root requirements.txt (Cloud Functions / Cloud Run) from the lock; a test checks it.
requirements.txt: requirements.lock pyproject.toml | install
	$(BIN)/python -m infra.requirements

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The fast suite under each Python the project supports (requires-python in pyproject.toml)
# that this machine has, on PATH or under pyenv, each in its own virtualenv built from
# requirements.lock like .venv (.venv-py3.11, .venv-py3.12, .venv-py3.13), all sharing one
# pip cache; a missing Python is skipped and said so.
TEST_PYTHONS ?= 3.11 3.12 3.13
PIP_CACHE ?= $(CURDIR)/build/pip-cache

test-pythons:
	@for v in $(TEST_PYTHONS); do \
		py=""; \
		for c in python$$v $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$v.*/bin/python$$v \
				2>/dev/null | sort -rV); do \
			if "$$c" -c "import sys; sys.exit(sys.version_info[:2] != ($${v%%.*}, $${v#*.}))" \
					>/dev/null 2>&1; then py=$$c; break; fi; \
		done; \
		if [ -z "$$py" ]; then \
			echo "test-pythons: Python $$v skipped: no python$$v that runs on PATH or under pyenv"; \
			continue; \
		fi; \
		echo "test-pythons: Python $$v ($$py) in .venv-py$$v"; \
		PIP_CACHE_DIR="$(PIP_CACHE)" $(MAKE) --no-print-directory test-fast \
			VENV=.venv-py$$v PYTHON="$$py" || exit 1; \
	done

bench: demo
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf build .pytest_cache .ruff_cache
