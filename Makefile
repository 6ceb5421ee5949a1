SHELL := /bin/bash
# tokenkeeper: build, test and run the whole stack. See README.md.
GO       ?= go
CACHE    ?= $(or $(TOKENKEEPER_CACHE),$(HOME)/.cache/tokenkeeper)
GOBIN    := $(CURDIR)/.cache/gobin
STATICCHECK_VERSION := v0.7.0

.PHONY: build test unit integration install-stack demo lint fuzz bench soak clean clean-stack

build:
	$(GO) build -trimpath -o bin/tokenkeeper ./cmd/tokenkeeper

## test: vet, unit tests (race detector, fuzz seeds), then the integration tests on the real stack.
test: unit integration

unit:
	$(GO) vet ./...
	$(GO) vet -tags integration ./integration/
	$(GO) test -race -count=1 -shuffle=on ./...

integration: install-stack build
	$(GO) test -tags integration -count=1 -timeout 30m -v ./integration/ 2>&1 | tee .cache/integration.log | grep --line-buffered -E '^(=== RUN|--- |PASS|FAIL|ok|integration:)|_test.go'; exit $${PIPESTATUS[0]}

install-stack:
	@mkdir -p .cache
	TOKENKEEPER_CACHE=$(CACHE) integration/stack/install.sh >/dev/null

## demo: the whole stack on 127.0.0.1; prints the hub URL and a login; Ctrl-C stops it.
demo: install-stack build
	$(GO) build -o bin/demo ./integration/demo
	TOKENKEEPER_CACHE=$(CACHE) exec bin/demo

lint:
	GOBIN=$(GOBIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(GO) vet ./...
	$(GOBIN)/staticcheck ./...
	$(GOBIN)/staticcheck -tags integration ./integration/

## fuzz: every fuzz target for FUZZTIME each (the seeds also run in `make test`).
FUZZTIME ?= 10s
fuzz:
	@set -eo pipefail; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s $$pkg | tail -1; \
	  done; done

## soak: the refresher's deterministic simulation (refresh/sim_test.go) for SOAK_STEPS steps over
## SOAK_SEEDS seeds from SOAK_FIRST, with the race detector; a failure prints the command that replays it.
SOAK_STEPS ?= 1000000
SOAK_SEEDS ?= 8
SOAK_FIRST ?= 1
soak:
	TOKENKEEPER_SIM_STEPS=$(SOAK_STEPS) $(GO) test -race -count=1 -timeout 0 -run '^TestSimulation$$' -v ./refresh/ \
	  -sim.run -sim.seeds=$(SOAK_SEEDS) -sim.first=$(SOAK_FIRST) 2>&1 | grep -v '^=== '; exit $${PIPESTATUS[0]}

## bench: fresh-token, sweep and schedule figures measured on this machine; writes BENCHMARKS.md (about 15 minutes).
bench: install-stack build
	TOKENKEEPER_CACHE=$(CACHE) $(GO) run ./integration/bench -out BENCHMARKS.md

clean:
	rm -rf bin .cache/demo

## clean-stack: removes the installed stack (Keycloak, the virtualenv, the proxy) and the demo's run directories.
clean-stack:
	rm -rf $(CACHE) .cache/demo
