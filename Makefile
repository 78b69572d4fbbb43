# Stylecast. Fresh machine: `make demo` runs the live pipeline headless; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
REQS   := requirements.txt requirements-nodeps.txt requirements-train.txt requirements-train-nodeps.txt requirements-dev.txt
STAMP  := $(VENV)/.stamp
# Tests and the demo run headless; Qt gets the offscreen platform unless a display is wanted.
export QT_QPA_PLATFORM ?= offscreen
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test test-slow lint bench app package clean

setup: $(STAMP)

# One pip command for everything that has dependencies (mediapipe pins protobuf<5; a separate later
# install could upgrade it), then the --no-deps packages (see requirements.txt for why).
$(STAMP): $(REQS)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
		{ echo "Stylecast needs Python 3.11 (mediapipe 0.10.21 and the pinned wheels); $(PYTHON) is $$($(PYTHON) -V 2>&1). Use make PYTHON=python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements.txt -r requirements-train.txt -r requirements-dev.txt
	$(PIP) install -q --no-deps -r requirements-nodeps.txt -r requirements-train-nodeps.txt
	$(PIP) check || true
	touch $@

demo: setup
	$(PY) main.py stylize --source demo --out out/demo.mp4 --report out/demo_stats.json

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -m "not slow" -q

# The slow suite builds the installer too, so it installs what `make package` does.
test-slow: setup
	$(PIP) install -q -r requirements-package.txt
	$(PY) -m pytest -m slow -q

bench: setup
	$(PY) main.py bench all

app: setup
	QT_QPA_PLATFORM= $(PY) main.py app

package: setup
	$(PIP) install -q -r requirements-package.txt
	$(PY) packaging/build.py

clean:
	rm -rf out build dist .pytest_cache .ruff_cache
