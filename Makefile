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

.PHONY: install tools demo serve browser test test-fast lint bench clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	# tensorflow-serving-api declares a dependency on the full tensorflow package; its protos
	# need only tensorflow-cpu, already installed above.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		tensorflow-serving-api==2.21.0
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

tools: $(TOOLS)/.installed

demo: install
	$(BIN)/modelprep demo

serve: demo
	DEMO_PAGE=$${DEMO_PAGE:-true} $(BIN)/functions-framework --target predict \
		--source functions/main.py --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check .

browser:
	bash examples/ci/install-chromium.sh || echo "chromium not installed: the browser tests will skip"

test: lint browser tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: demo
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf build .pytest_cache .ruff_cache
