# The README's two commands: `make demo` and `make test`. Each creates .venv and installs the
# project when missing (pip, not uv: pip finds the CPU torch wheel on local disk).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.musicops-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export WANDB_MODE ?= offline

AC_VENV := .venv-audiocraft
AC_STAMP := $(AC_VENV)/.musicops-installed

.PHONY: install demo test test-fast lint typecheck clean-state chromium postgres audiocraft-env fluidsynth kubectl

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/musicops demo

# Browser tests drive Debian's Chromium (/usr/bin/chromium) through Playwright; Playwright's own
# browser download cannot run here. CI runs as root; a no-op once installed.
chromium:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null)

# audiocraft 1.3.0 pins torch 2.1 and friends that have no wheels here, so its reference test runs
# in its own venv: audiocraft and torchaudio with --no-deps beside torch 2.13 (docs/audiocraft.md).
# PyPI's torchaudio is a CUDA build whose C++ extension cannot load beside the CPU torch; without
# the extension files torchaudio imports its pure-Python parts, all audiocraft's MusicGen path uses.
$(AC_STAMP): requirements/audiocraft.txt requirements/audiocraft-constraints.txt
	test -x $(AC_VENV)/bin/python || $(PYTHON) -m venv $(AC_VENV)
	$(AC_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-c requirements/audiocraft-constraints.txt -r requirements/audiocraft.txt
	$(AC_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
		audiocraft==1.3.0 torchaudio==2.11.0
	rm -f $(AC_VENV)/lib/python3*/site-packages/torchaudio/lib/*.so
	touch $(AC_STAMP)

audiocraft-env: $(AC_STAMP)

# The provenance and MOS stores are also tested on a real PostgreSQL server, which the tests start
# from Debian's binaries (tests/helpers/postgres.py). A no-op once installed.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null)

# The copyright gate is tested on real music rendered from public-domain scores (music21's corpus)
# through FluidSynth and a General MIDI soundfont, into a scratch folder. A no-op once installed.
fluidsynth:
	@(command -v fluidsynth >/dev/null && test -f /usr/share/sounds/sf2/FluidR3_GM.sf2) || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fluidsynth fluid-soundfont-gm >/dev/null)

# deploy/ is rendered with `kubectl kustomize` (Debian's kubernetes-client; Helm is not packaged
# there) and the result validated against the Kubernetes schemas. A no-op once installed.
kubectl:
	@command -v kubectl >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null)

test: install chromium postgres audiocraft-env fluidsynth kubectl
	$(BIN)/ruff check .
	MYPY=$(CURDIR)/$(BIN)/mypy scripts/typecheck
	MUSICOPS_AUDIOCRAFT_PYTHON=$(CURDIR)/$(AC_VENV)/bin/python MUSICOPS_REQUIRE_AUDIOCRAFT=1 \
		MUSICOPS_REQUIRE_POSTGRES=1 MUSICOPS_REQUIRE_KUBECTL=1 $(BIN)/pytest

# The fast tier: every test not marked slow (no servers, kfp pipelines, PostgreSQL, Chromium,
# audiocraft venv or FluidSynth renders), so it needs nothing beyond the install.
test-fast: install
	$(BIN)/ruff check .
	MYPY=$(CURDIR)/$(BIN)/mypy scripts/typecheck
	$(BIN)/pytest -m "not slow"

lint: install
	$(BIN)/ruff check .

# mypy over the package (scripts/typecheck: a symlink view of the package-dir layout under build/).
typecheck: install
	MYPY=$(CURDIR)/$(BIN)/mypy scripts/typecheck

clean-state:
	rm -rf .musicops
