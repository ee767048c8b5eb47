# The README's two commands are `make workshop` and `make test`; each does its own set-up.
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup workshop test lint lab services-up services-down clean benchmarks browser

setup:            ## create .venv and install everything (idempotent, quick the second time)
	@bash scripts/install.sh

workshop: setup   ## start the local services and execute every notebook into build/notebooks
	$(PY) -m labkit.workshop

test: setup browser ## lint, unit tests, notebook execution and static notebook lint
	@status=0; $(PY) -m ruff check . || status=1; \
	LABKIT_CI=1 $(PY) -m pytest || status=1; \
	exit $$status

browser:          ## Debian's chromium + chromium-driver for the web page test (installed when root, else skipped)
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "browser: installing chromium and chromium-driver (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "browser: chromium is not installed and this is not root: tests/test_web.py will be skipped"; fi

lint: setup
	$(PY) -m ruff check .

lab: setup        ## open JupyterLab on the notebooks
	$(PY) -m labkit.cli services up
	.venv/bin/jupyter lab notebooks/

services-up: setup
	$(PY) -m labkit.cli services up

services-down:
	$(PY) -m labkit.cli services down

benchmarks: setup
	$(PY) benchmarks/model_service.py
	$(PY) benchmarks/search_service.py
	$(PY) benchmarks/eval_throughput.py
	$(PY) benchmarks/service.py
	$(PY) benchmarks/guards.py
	$(PY) benchmarks/monitor.py

clean:            ## stop services and remove build output and local state (keeps .venv)
	-$(PY) -m labkit.cli services down
	rm -rf build .labkit
