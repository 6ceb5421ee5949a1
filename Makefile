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

.PHONY: build test unit wheels python-install pytest integration integration-jh6 integration-jh5 image image-test z2jh install-stack demo lint fuzz bench soak clean clean-stack

VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o bin/tokenkeeper ./cmd/tokenkeeper

## test: vet, unit tests (race detector, fuzz seeds), the Python packages' tests, the image, the Zero to JupyterHub values, then the integration tests on the real stack.
test: unit pytest image-test z2jh integration

unit:
	$(GO) vet ./...
	$(GO) vet -tags integration ./integration/
	$(GO) vet -tags z2jh ./integration/z2jh/
	$(GO) vet -tags image ./deploy/image/
	$(GO) test -race -count=1 -shuffle=on ./...

## wheels: builds the Python packages tokenkeeper-hub and tokenkeeper-notebook into .cache/wheels.
wheels: install-stack
	rm -rf $(WHEELS)
	$(CACHE)/venv/bin/python -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
	  -w $(WHEELS) python/tokenkeeper-hub python/tokenkeeper-notebook

## python-install: installs both wheels into every virtualenv of the test stack (hubs and single-user servers).
python-install: wheels
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
# with an admin, the admin's session), and tokenkeeper's own scopes.
CORE_TESTS := ^(TestLoginWithWrongPasswordSaysWhy|TestFreshTokenServesOwnTokenAndGuardsOthers|TestRunningUserIsRefreshedBeforeExpiry|TestTokenFileStaysFreshAcrossLifetimes|TestServerKeepsTokenFilesFreshUntilTheSessionEnds|TestSpawnedServerHasFreshTokenInEnvironment|TestTokenCommandInsideServer|TestBackchannelLogoutFromRPInitiatedLogout|TestSSOMaxLifespanLogsOut|TestCrossUserNoTokenOrStatusOfAnother|TestHubAdminSessionStaysIntact|TestTokenkeeperHoldsLeastScopes)$$
IT_FILTER  := grep --line-buffered -E '^(=== RUN|--- |PASS|FAIL|ok|integration:)|_test.go'

## integration: the whole suite with JupyterHub 6.1, then CORE_TESTS with JupyterHub 5.
integration: integration-jh6 integration-jh5

integration-jh6: install-stack build python-install
	TK_HUB_VERSION=6 $(GO) test -tags integration -count=1 -timeout 60m -v ./integration/ 2>&1 | tee .cache/integration.log | $(IT_FILTER); exit $${PIPESTATUS[0]}

integration-jh5: install-stack build python-install
	TK_HUB_VERSION=5 $(GO) test -tags integration -count=1 -timeout 20m -v -run '$(CORE_TESTS)' ./integration/ 2>&1 | tee .cache/integration-jh5.log | $(IT_FILTER); exit $${PIPESTATUS[0]}

## image: tokenkeeper's OCI image (static binary, non-root user, no shell) as .cache/image/tokenkeeper.tar, without a container daemon.
IMAGE_DIR := .cache/image
image:
	@mkdir -p $(IMAGE_DIR)
	CGO_ENABLED=1 $(GO) build -trimpath -tags osusergo,netgo,sqlite_omit_load_extension \
	  -ldflags "-X main.version=$(VERSION) -linkmode external -extldflags -static" -o $(IMAGE_DIR)/tokenkeeper ./cmd/tokenkeeper
	$(GO) run ./deploy/image -binary $(IMAGE_DIR)/tokenkeeper -version $(VERSION) -out $(IMAGE_DIR)/tokenkeeper.tar

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

## fuzz: every fuzz target for FUZZTIME each (the seeds also run in `make test`).
FUZZTIME ?= 10s
fuzz:
	@set -eo pipefail; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; \
	    mkdir -p .cache; out=.cache/fuzz.log; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s $$pkg >$$out 2>&1 \
	      || { grep -v '^fuzz: elapsed' $$out; exit 1; }; tail -1 $$out; \
	  done; done

## soak: the refresher's deterministic simulation (refresh/sim_test.go) for SOAK_STEPS steps over
## SOAK_SEEDS seeds from SOAK_FIRST, with the race detector; a failure prints the command that replays it.
SOAK_STEPS ?= 1000000
SOAK_SEEDS ?= 8
SOAK_FIRST ?= 1
soak:
	TOKENKEEPER_SIM_STEPS=$(SOAK_STEPS) $(GO) test -race -count=1 -timeout 0 -run '^TestSimulation$$' -v ./refresh/ \
	  -sim.seeds=$(SOAK_SEEDS) -sim.first=$(SOAK_FIRST) 2>&1 | grep -v '^=== '; exit $${PIPESTATUS[0]}

## bench: fresh-token, sweep, hub budget and schedule figures measured on this machine; writes BENCHMARKS.md (about 45 minutes).
bench: install-stack build python-install
	TOKENKEEPER_CACHE=$(CACHE) $(GO) run ./integration/bench -out BENCHMARKS.md

clean:
	rm -rf bin .cache/demo

## clean-stack: removes the installed stack (Keycloak, the virtualenv, the proxy) and the demo's run directories.
clean-stack:
	rm -rf $(CACHE) .cache/demo
