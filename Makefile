# The two commands: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.w2s-installed
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: setup demo test lint format clean

setup: $(STAMP)

# torch is pinned by constraints.txt to the version whose CPU build installs here;
# the pin is for this set-up only, not for users of the library.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip setuptools wheel
	$(PY) -m pip install $(PIP_FLAGS) -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/w2s demo

test: setup lint
	$(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info
