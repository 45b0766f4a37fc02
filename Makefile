# Two commands from a fresh clone: `make test` and `make demo`. Everything else is set up on the way.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_STAMP := $(VENV)/.installed-lint
# mypy resolves modules by folder, so it gets the installed layout as links: agent/ -> megawatch/agent, ...
LINT_TREE := $(VENV)/lint-tree

.PHONY: test lint demo bench venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

$(LINT_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $(LINT_STAMP)

# ruff, then mypy (both run, either fails the target), pinned in the `lint` extra. mypy's paths are mapped
# back from the link tree to the repo's.
lint: $(LINT_STAMP)
	rm -rf $(LINT_TREE) && mkdir -p $(LINT_TREE)/megawatch
	ln -s $(CURDIR)/megawatch/* $(LINT_TREE)/megawatch/
	for d in agent collector common simulator; do ln -s $(CURDIR)/$$d $(LINT_TREE)/megawatch/$$d; done
	ln -s $(CURDIR)/bench $(LINT_TREE)/bench
	status=0; $(BIN)/ruff check --no-cache || status=1; \
	cd $(LINT_TREE) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml \
		--cache-dir $(CURDIR)/$(VENV)/mypy-cache -p megawatch -p bench > mypy.out || status=1; \
	sed -e 's#^megawatch/\(agent\|collector\|common\|simulator\)/#\1/#' mypy.out; exit $$status

demo: $(STAMP)
	$(BIN)/megawatch demo

# ~5-8 min at 10,000 miners; `make bench BENCH_ARGS="--miners 1000 --no-pyasic"` passes options (python -m bench --help).
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
