SHELL := /bin/bash
# tokenkeeper: build, test and run the whole stack. See README.md.
GO       ?= go
CACHE    ?= $(or $(TOKENKEEPER_CACHE),$(HOME)/.cache/tokenkeeper)
GOBIN    := $(CURDIR)/.cache/gobin
STATICCHECK_VERSION := v0.7.0
# The test stack's virtualenvs (integration/stack/install.sh): JupyterHub 6.1, and
# the JupyterHub 5 Zero to JupyterHub pins. Each runs a hub and its single-user servers.
VENVS    := venv venv-jh5
WHEELS   := .cache/wheels

.PHONY: build test preflight unit wheels python-install pytest integration integration-jh6 integration-jh5 it-prepare screenshots image image-test z2jh install-stack demo lint fuzz bench soak replay replay-check clean clean-stack

# VERSION is what `tokenkeeper --version` says and the image's tag: the tag at
# HEAD (v0.1.0), else the last tag and the commits since (v0.1.0-3-gab42c37),
# else the commit (ab42c37); -dirty when the work tree has changes.
# REVISION is the full commit, the image's org.opencontainers.image.revision.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)

build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o bin/tokenkeeper ./cmd/tokenkeeper

## test: vet, unit tests (race detector, fuzz seeds), the Python packages' tests, the image, the Zero to JupyterHub values, then the integration tests on the real stack.
## Each phase says how long it took.
TEST_PHASES := preflight install-stack unit replay-check pytest image-test z2jh integration
test:
	@for p in $(TEST_PHASES); do start=$$(date +%s); \
	  $(MAKE) --no-print-directory $$p || { echo "make test: $$p failed after $$(( $$(date +%s) - start )) s" >&2; exit 1; }; \
	  echo "make test: $$p took $$(( $$(date +%s) - start )) s"; done

## preflight: stops at once, in one line, when a tool that make test needs is missing.
TOOLS := go gcc git python3 mvn java npm sha1sum tar
preflight:
	@missing=""; for t in $(TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	  python3 -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	  [ -z "$$missing" ] || { echo "make: missing on this machine:$$missing (README: Development says what make test needs)" >&2; exit 1; }

unit:
	$(GO) vet ./...
	$(GO) vet -tags integration ./integration/
	$(GO) vet -tags z2jh ./integration/z2jh/
	$(GO) vet -tags image ./deploy/image/
	$(GO) test -race -count=1 -shuffle=on ./...

## wheels: builds the Python packages tokenkeeper-hub and tokenkeeper-notebook into .cache/wheels.
## Needs only Python with pip (pip fetches hatchling, the build backend, from PyPI).
## Each package carries its own copy of the root LICENSE (a wheel cannot take a file from
## outside its directory): python/*/LICENSE must stay identical to LICENSE, which the
## packages' tests check.
PYTHON ?= python3
WHEEL_BUILD = -m pip wheel -q --disable-pip-version-check --no-deps -w $(WHEELS) python/tokenkeeper-hub python/tokenkeeper-notebook
wheels:
	rm -rf $(WHEELS)
	$(PYTHON) $(WHEEL_BUILD)

## python-install: installs both wheels into every virtualenv of the test stack (hubs and single-user servers),
## built offline with the hatchling install.sh put into the stack's virtualenv.
python-install: install-stack
	rm -rf $(WHEELS)
	$(CACHE)/venv/bin/python $(WHEEL_BUILD) --no-build-isolation
	@set -e; for v in $(VENVS); do \
	  $(CACHE)/$$v/bin/pip install -q --disable-pip-version-check --no-deps --force-reinstall $(WHEELS)/*.whl; done

## pytest: the Python packages' tests, run on the installed wheels (the hub package with each JupyterHub), and the README example's.
pytest: python-install
	@set -e; for v in $(VENVS); do \
	  echo "pytest: tokenkeeper-hub with JupyterHub $$($(CACHE)/$$v/bin/jupyterhub --version)"; \
	  $(CACHE)/$$v/bin/python -m pytest -q -p no:cacheprovider python/tokenkeeper-hub/tests; done
	@echo "pytest: tokenkeeper-notebook"
	$(CACHE)/venv/bin/python -m pytest -q -p no:cacheprovider python/tokenkeeper-notebook/tests
	@echo "pytest: README's example is the stack's"
	$(CACHE)/venv/bin/python -m pytest -q -p no:cacheprovider integration/stack

# CORE_TESTS are the integration tests that also run against JupyterHub 5:
# login and fresh-token with a user's own token, refresh across lifetimes,
# the spawn hook, fresh-token from a server (Go and Python clients), token
# files kept by the server (JupyterHub 5 refuses a logged-out user's server
# token), logout (RP-initiated back-channel, SSO max), hub admins (cross-user
# with an admin, the admin's session), tokenkeeper's own scopes, and the
# service page in a browser (the hub's OAuth without PKCE on JupyterHub 5).
CORE_TESTS := ^(TestLoginWithWrongPasswordSaysWhy|TestFreshTokenServesOwnTokenAndGuardsOthers|TestRunningUserIsRefreshedBeforeExpiry|TestTokenFileStaysFreshAcrossLifetimes|TestServerKeepsTokenFilesFreshUntilTheSessionEnds|TestSpawnedServerHasFreshTokenInEnvironment|TestTokenCommandInsideServer|TestBackchannelLogoutFromRPInitiatedLogout|TestSSOMaxLifespanLogsOut|TestCrossUserNoTokenOrStatusOfAnother|TestHubAdminSessionStaysIntact|TestTokenkeeperHoldsLeastScopes|TestServicePageInChromium)$$

## integration: the whole suite with JupyterHub 6.1 on IT_SHARDS stacks, and CORE_TESTS with JupyterHub 5
## on one more, all side by side (integration/suite); each shard's whole output goes to .cache/integration/.
## IT_RUN narrows the JupyterHub 6 suite to the tests it matches.
IT_SHARDS ?= 4
IT_RUN    ?= .
IT_BIN    := .cache/integration.test
IT_SUITE   = $(GO) run ./integration/suite -binary $(IT_BIN) -durations integration/durations.txt -logs .cache/integration
integration: it-prepare
	$(IT_SUITE) -suite '6:$(IT_SHARDS):$(IT_RUN)' -suite '5:1:$(CORE_TESTS)'

integration-jh6: it-prepare
	$(IT_SUITE) -suite '6:$(IT_SHARDS):$(IT_RUN)'

integration-jh5: it-prepare
	$(IT_SUITE) -suite '5:1:$(CORE_TESTS)'

it-prepare: install-stack build python-install
	$(GO) test -c -tags integration -o $(IT_BIN) ./integration/

## screenshots: the service page's browser test (Chromium) alone on one stack; it writes a screenshot
## of each view of the page into docs/screenshots.
screenshots: it-prepare
	TOKENKEEPER_SCREENSHOTS=$(CURDIR)/docs/screenshots $(IT_SUITE) -suite '6:1:^TestServicePageInChromium$$'

## image: tokenkeeper's OCI image (static binary, non-root user, no shell) as .cache/image/tokenkeeper.tar, without a container daemon.
## The image's platform is the one the binary is built for (go env GOOS and GOARCH); its labels name
## VERSION, REVISION, the source repository and the license.
IMAGE_DIR := .cache/image
image:
	@mkdir -p $(IMAGE_DIR)
	CGO_ENABLED=1 $(GO) build -trimpath -tags osusergo,netgo,sqlite_omit_load_extension \
	  -ldflags "-X main.version=$(VERSION) -linkmode external -extldflags -static" -o $(IMAGE_DIR)/tokenkeeper ./cmd/tokenkeeper
	$(GO) run ./deploy/image -binary $(IMAGE_DIR)/tokenkeeper -version $(VERSION) -revision "$(REVISION)" \
	  -os $$($(GO) env GOOS) -arch $$($(GO) env GOARCH) -out $(IMAGE_DIR)/tokenkeeper.tar

## image-test: unpacks the image and runs its binary with --check-config.
image-test: image
	TK_IMAGE=$(CURDIR)/$(IMAGE_DIR)/tokenkeeper.tar $(GO) test -tags image -count=1 ./deploy/image/

## z2jh: renders deploy/z2jh/values.yaml with helm against the Zero to JupyterHub chart in ../shared and checks the hub's pod and configuration.
HELM_VERSION := v3.22.0
HELM       := $(CACHE)/helm-$(HELM_VERSION)/helm
Z2JH_CHART ?= $(firstword $(wildcard $(abspath ../shared/z2jh/jupyterhub) /work/shared/z2jh/jupyterhub) $(abspath ../shared/z2jh/jupyterhub))
$(HELM):
	GOBIN=$(dir $(HELM)) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

z2jh: $(HELM) python-install build
	TK_HELM=$(HELM) TK_Z2JH_CHART=$(Z2JH_CHART) TK_PYTHON=$(CACHE)/venv-jh5/bin/python \
	  $(GO) test -tags z2jh -count=1 ./integration/z2jh/

install-stack:
	@mkdir -p .cache
	TOKENKEEPER_CACHE=$(CACHE) integration/stack/install.sh >/dev/null

## demo: the whole stack on 127.0.0.1; prints the hub URL and a login; Ctrl-C stops it.
demo: install-stack build python-install
	$(GO) build -o bin/demo ./integration/demo
	TOKENKEEPER_CACHE=$(CACHE) exec bin/demo

lint:
	GOBIN=$(GOBIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(GO) vet ./...
	$(GOBIN)/staticcheck ./...
	$(GOBIN)/staticcheck -tags integration ./integration/
	$(GOBIN)/staticcheck -tags z2jh ./integration/z2jh/
	$(GOBIN)/staticcheck -tags image ./deploy/image/

## fuzz: every fuzz target for FUZZTIME each (the seeds also run in `make test`). FUZZTIME is a
## count of inputs (Nx), not a duration: a duration races the fuzzing coordinator's own deadline on a
## busy machine and fails with "context deadline exceeded" though no input failed.
FUZZTIME ?= 200000x
fuzz:
	@set -eo pipefail; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; \
	    mkdir -p .cache; out=.cache/fuzz.log; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s $$pkg >$$out 2>&1 \
	      || { grep -v '^fuzz: elapsed' $$out; exit 1; }; tail -1 $$out; \
	  done; done

## soak: the refresher's deterministic simulation (refresh/sim_test.go) for SOAK_STEPS steps over
## SOAK_SEEDS seeds from SOAK_FIRST; a failure prints the command that replays it. (make unit runs the
## simulation with the race detector; SOAK_FLAGS=-race adds it here, about ten times slower.)
SOAK_STEPS ?= 1000000
SOAK_SEEDS ?= 8
SOAK_FIRST ?= 1
SOAK_FLAGS ?=
soak:
	TOKENKEEPER_SIM_STEPS=$(SOAK_STEPS) $(GO) test $(SOAK_FLAGS) -count=1 -timeout 0 -run '^TestSimulation$$' -v ./refresh/ \
	  -sim.seeds=$(SOAK_SEEDS) -sim.first=$(SOAK_FIRST) 2>&1 | grep -v '^=== '; exit $${PIPESTATUS[0]}

## replay-check: the simulation's replay test on its own, without the race detector (make test).
replay-check:
	$(GO) test -count=1 -run '^TestSimulationReplays$$' ./refresh/

## replay: each of four seeds run ten times must give the same simulation trace, line for line.
REPLAY_STEPS ?= 2500
replay:
	@set -e; for s in 1 2 3 4; do $(GO) test -count=1 -run '^TestSimulationReplays$$' ./refresh/ \
	  -sim.seed=$$s -sim.steps=$(REPLAY_STEPS) -sim.repeat=10; done

## bench: fresh-token, sweep, hub budget and schedule figures measured on this machine; writes BENCHMARKS.md (about 45 minutes).
bench: install-stack build python-install
	TOKENKEEPER_CACHE=$(CACHE) $(GO) run ./integration/bench -out BENCHMARKS.md

clean:
	rm -rf bin .cache/demo

## clean-stack: removes the installed stack (Keycloak, the virtualenv, the proxy) and the demo's run directories.
clean-stack:
	rm -rf $(CACHE) .cache/demo
