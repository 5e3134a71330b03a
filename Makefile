# The README's quick start: `make bake` bakes the example image, `make test` runs every test.
# Both first run scripts/setup-host.sh, which installs and starts what is missing.
RECIPE ?= images/debian-12-base.yaml
VENV := .venv/bin

.PHONY: setup bake bake-web test test-unit lint

setup:
	@scripts/setup-host.sh

bake: setup
	$(VENV)/baker build $(RECIPE)

bake-web: setup
	$(VENV)/baker build images/debian-12-web.yaml

lint: setup
	$(VENV)/ruff check baker tests bench
	$(VENV)/ruff format --check baker tests bench

test: setup lint
	$(VENV)/pytest

test-unit: setup
	$(VENV)/pytest -m "not e2e"
