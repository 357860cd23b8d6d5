# `make bench` and `make test` create .venv on first use; nothing else is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: bench test report clean-results

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch and torchvision first and together, so the pair comes from this machine's local wheels.
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

bench: $(STAMP)
	$(BIN)/vibbench run quick

report: $(STAMP)
	$(BIN)/vibbench report results/quick

test: $(STAMP)
	$(BIN)/python -m pytest

clean-results:
	rm -rf results/quick/checkpoints

# Regression tracking (docs/benchmarks.md). The asv suite imports the code of
# the tree it lives in, so PYTHONPATH names this tree; asv hands some of its
# subprocesses ASV_PYTHONPATH instead of PYTHONPATH.
ASV_ENV := PYTHONPATH=$(CURDIR) ASV_PYTHONPATH=$(CURDIR)

.PHONY: asv asv-compare bench-micro bench-targets

# Run the asv suite on the working tree, stored as HEAD's results, and publish HTML to results/asv/html.
asv: $(STAMP)
	$(BIN)/asv machine --yes >/dev/null
	$(ASV_ENV) $(BIN)/asv run --python=same --set-commit-hash $$(git rev-parse HEAD)
	$(BIN)/asv publish

# Compare the working tree with BASE (a revision); exit non-zero on a regression.
asv-compare: $(STAMP)
	@test -n "$(BASE)" || { echo "usage: make asv-compare BASE=<revision>, for example BASE=HEAD~1" >&2; exit 2; }
	.ci/asv_compare.sh $(BASE) HEAD

# Time the micro-benchmarks in tests/micro (make test runs them once, untimed).
bench-micro: $(STAMP)
	$(BIN)/python -m pytest tests/micro --benchmark-enable --benchmark-autosave --benchmark-sort=name \
		--benchmark-columns=min,median,iqr,rounds

# Print the performance targets' measured ratios beside the targets.
bench-targets: $(STAMP)
	$(ASV_ENV) $(BIN)/python benchmarks/asv_bench/targets.py
