# The README's quick start: `make bake` bakes the example image, `make test` runs every test.
# Both first run scripts/setup-host.sh, which installs and starts what is missing.
RECIPE ?= images/debian-12-base.yaml
VENV := .venv/bin
# The local signing key: made once by `baker keygen`, never committed (see .gitignore).
KEY := keys/baker.key

.PHONY: setup bench-setup bake bake-web bake-layers test test-unit lint

setup:
	@scripts/setup-host.sh

# What bench/ needs beyond the tests: Packer, for bench/vs_packer.py.
bench-setup:
	@scripts/setup-host.sh --bench

$(KEY):
	$(VENV)/baker keygen keys

bake: setup $(KEY)
	$(VENV)/baker build --sign-key $(KEY) $(RECIPE)
	$(VENV)/baker verify --pub keys/baker.pub out/$(notdir $(basename $(RECIPE)))

bake-web: setup $(KEY)
	$(MAKE) bake RECIPE=images/debian-12-web.yaml

# Layered images: the organisation's base, then an application image on it, pinned by the
# digest the base's build recorded (README: Layered images).
bake-layers: setup $(KEY)
	$(MAKE) bake RECIPE=images/org-base.yaml
	$(VENV)/baker build --sign-key $(KEY) images/org-app.yaml --var org_base_sha256=$$($(VENV)/python \
	  -c 'import json; print(json.load(open("out/org-base/build.json"))["image"]["digest"][7:])')
	$(VENV)/baker verify --pub keys/baker.pub out/org-app
	$(VENV)/baker inspect out/org-app

lint: setup
	$(VENV)/ruff check baker tests bench
	$(VENV)/ruff format --check baker tests bench
	$(VENV)/mypy

# A killed earlier run may have left build machines behind: they go first. Two workers: a
# build leaves much of a second core idle (dpkg, downloads, captures), and they share one session
# (tests/support/sharing.py); --dist loadfile keeps each module in one worker, in the order
# tests/conftest.py gives.
test: setup lint
	$(VENV)/baker clean
	$(VENV)/pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=30

test-unit: setup
	$(VENV)/pytest -m "not e2e"
