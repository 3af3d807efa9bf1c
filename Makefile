# The two commands a newcomer runs: `make demo` and `make test`. Each installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CJK_FONT_PACKAGE := fonts-wqy-zenhei
# Bytecode cached (in __pycache__, ignored by git) even where the environment says not to: every replica of
# every deploy imports the service's modules again, and compiles them again without it.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install fonts browser postgres prometheus demo test test-fast test-unit coverage lint format bench bench-smoke tiny-models device-wheels clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@$(MAKE) --no-print-directory fonts browser postgres prometheus
	@touch $(STAMP)

# Captions and title cards in Chinese, Japanese or Korean need a font with those glyphs (README, "Fonts").
fonts:
	@if $(BIN)/python -c "from engines.media.fonts import has_cjk_font as f; raise SystemExit(not f())"; then \
		echo "CJK font: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q $(CJK_FONT_PACKAGE) >/dev/null || \
		(apt-get update -q >/dev/null && apt-get install -y -q $(CJK_FONT_PACKAGE) >/dev/null); \
	else \
		echo "No CJK font: run 'sudo apt-get install $(CJK_FONT_PACKAGE)' or set video_processing.font_path"; \
	fi

# The studio's browser tests drive Debian's chromium through Playwright (it cannot download its own here).
browser:
	@if command -v chromium >/dev/null; then \
		echo "chromium: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q chromium >/dev/null || \
		(apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null); \
	else \
		echo "No chromium: run 'sudo apt-get install chromium' for the studio's browser tests"; \
	fi

# The job store's tests run on a real PostgreSQL server too, which they start themselves from Debian's package.
postgres:
	@if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null; then \
		echo "postgresql: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null || \
		(apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null); \
	else \
		echo "No PostgreSQL server: run 'sudo apt-get install postgresql' for the job store's PostgreSQL tests"; \
	fi

# The Grafana dashboard's test scrapes the service with a real Prometheus, Debian's (without its exporters).
prometheus:
	@if command -v prometheus >/dev/null; then \
		echo "prometheus: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null || \
		(apt-get update -q >/dev/null && \
		 DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null); \
	else \
		echo "No Prometheus: run 'sudo apt-get install prometheus' for the dashboard's test"; \
	fi

demo: install
	$(BIN)/storyreel demo --out out/demo

# Everything but the benchmarks' smoke runs (bench-smoke), on two workers: one runs the e2e tests on the
# session's Ray cluster, the other the tests that start clusters of their own, then the tiers without one.
# The groups go out in the order tests/conftest.py sorts them (xdist would otherwise send the groups of most
# tests first, and the multi-node test's two, the longest, last).
test: install
	$(BIN)/python -m pytest -n 2 --dist loadgroup --no-loadscope-reorder -m "not bench"

# The edit-run loop: unit and integration tests but the slow ones, on both cores, with no Ray cluster.
test-fast: install
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m "not e2e and not bench and not slow"

test-unit: install
	$(BIN)/python -m pytest tests/unit

# make test under coverage.py: line coverage of the service's code as the test process runs it (replicas
# are Ray's processes and are not counted).
coverage: install
	$(BIN)/coverage run --source=core,engines,deployments,serve_app -m pytest -m "not bench"
	$(BIN)/coverage report --precision=2 | tail -1

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python -m bench

# Every benchmark's entry point once, on small inputs, checking that it writes its figures (tests/bench):
# a benchmark that a change broke fails CI, not the next person who measures.
bench-smoke: install
	$(BIN)/python -m pytest tests/bench

# Wheels a bare Python 3.12 + PyTorch image lacks, at the versions this venv runs (bench/device_wheels.py
# lists them: diffusers, accelerate, transformers and everything they require, less torch, numpy and pytest);
# bench/device_check.sh installs them on the GPU machine, which has no network.
device-wheels: install
	rm -rf .whl
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
		$$($(BIN)/python -m bench.device_wheels)

tiny-models: install
	$(BIN)/python -m tests.support.tiny_models out/tiny-models

clean:
	rm -rf out bench/out .pytest_cache
