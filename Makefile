# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.camviz-installed
OUT ?= out/demo

.PHONY: setup demo test lint bench browser-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,lab,timm,imagenet]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m camviz demo --out $(OUT)

# Debian's chromium for tests/test_browser.py and kaleido (never `playwright install`: it
# downloads a browser). Failure is tolerated: the browser test then skips and says why.
browser-deps:
	@test -x /usr/bin/chromium || ( command -v apt-get >/dev/null \
		&& (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		) >/dev/null 2>&1 || true
	@test -x /usr/bin/chromium \
		|| echo "chromium could not be installed (needs root and a Debian mirror): the browser test will skip"

test: setup browser-deps
	$(PY) -m ruff check camviz tests benchmarks
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/bench_run.py
	$(PY) benchmarks/bench_widgets.py
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_scan.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_scan.py --model demo --size 128 --batch-size 32 --images 256
	$(PY) benchmarks/bench_stats.py --n 1000000

clean:
	rm -rf out artifacts .pytest_cache .ruff_cache
