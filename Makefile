# DevID Station build. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
PROTOS := $(shell find proto -name '*.proto' | sort)

.PHONY: help deps setup build test test-reports chaos fuzz fuzz-ci bench bench-ca bench-line bench-scale bench-store lint generate generate-check tidy-check demo dev-config ci clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# Debian packages the build, the demo and the tests need, named one by one: apt installs no
# recommends here, so nothing arrives unless it is on this list.
#   gcc libc6-dev libssl-dev      cgo build of the in-process TPM simulator (links libcrypto)
#   protobuf-compiler             protoc, for make generate / generate-check
#   libprotobuf-dev               the well-known .proto files protoc imports (timestamp.proto)
#   swtpm swtpm-tools             software TPM processes for the swtpm test tier and fixture units
#   tpm2-tools                    independent read-back of TPM state in tests
#   openssl curl                  independent checks of certificates and of the EST CA in tests
#   git ca-certificates           generate-check and module downloads
#   poppler-utils zbar-tools      the printable reports' tests: pdftotext/pdftoppm read the PDFs,
#                                 zbarimg scans their barcodes
#   systemd                       systemd-analyze verify/security of deploy/systemd units (needs no running systemd)
#   chromium                      the operator console's browser test (headless, driven from Go)
# The field test (fixture/line TestFieldReenrollment) uses a unit's TPM as the field stack does:
#   tpm2-abrmd libtss2-tcti-tabrmd0  the TPM resource manager the tools share (swtpm alone runs out
#                                 of object slots mid-handshake) and the tools' TCTI to reach it
#   dbus                          a private session bus for tpm2-abrmd
#   tpm2-openssl                  the OpenSSL provider that signs CSRs and TLS with keys in the TPM
#   libtpm2-pkcs11-1 libtpm2-pkcs11-tools  tpm2-pkcs11 and tpm2_ptool, which deploy/firstboot's
#                                 devid-pkcs11-link uses to link the LDevID key into a token
#   opensc gnutls-bin             pkcs11-tool and p11tool: list and sign with the token's object,
#                                 resolve the Identity Service config's PKCS#11 URI
DEB_PACKAGES := gcc libc6-dev libssl-dev protobuf-compiler libprotobuf-dev swtpm swtpm-tools \
	tpm2-tools openssl curl git ca-certificates poppler-utils zbar-tools systemd chromium \
	tpm2-abrmd libtss2-tcti-tabrmd0 dbus tpm2-openssl libtpm2-pkcs11-1 libtpm2-pkcs11-tools opensc gnutls-bin

deps: ## install the Debian packages and Go modules the build and tests need (quick when all are there)
	@installed=$$(dpkg-query -W -f='$${Package} $${Status}\n' $(DEB_PACKAGES) 2>/dev/null | awk '$$NF=="installed"{print $$1}'); \
	missing=$$(for p in $(DEB_PACKAGES); do grep -qx "$$p" <<<"$$installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "==> installing Debian packages (apt, no recommends; about a minute):" $$missing; \
		$$sudo apt-get -o DPkg::Lock::Timeout=300 update -qq && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
		echo "==> installed:" $$missing; \
	fi
	@$(GO) mod download

setup: deps ## the same as deps (kept for old habits)

# ticking runs a long command ($(2)) and says every 15 s that it is still at it ($(1)).
ticking = ( while sleep 15; do echo "... $(1) ($${SECONDS}s)"; done ) & ticker=$$!; $(2); rc=$$?; kill $$ticker 2>/dev/null; exit $$rc

build: deps ## build every binary into bin/
	@echo "==> building every binary into bin/ (the first build compiles the C TPM simulator: about a minute)"
	@$(call ticking,still building,CGO_ENABLED=1 $(GO) build -o bin/ ./...)
	CGO_ENABLED=0 $(GO) build -o bin/device-agent ./device-agent/cmd/device-agent

# Packages whose concurrency the race detector must see.
RACE_PKGS := ./ca-client/... ./station/store/... ./station/gateway/... ./station/workflow/... ./station/api/... ./device-agent/agent/... ./fixture/estca/... ./fixture/attack/...

# go test -json through testprogress: go test's package lines, failures in full, a line every
# 20 s naming slow packages, and a closing "N passed, N failed, N skipped".
# The console's browser test saves its screenshot under out/artifacts/. go test's timeout only
# guards against a hung test; on a loaded machine under -race a package may need several
# minutes, so it is generous.
TEST_TIMEOUT := 30m
GOTEST = set -o pipefail; $(GO) build -o .bin/testprogress ./fixture/cmd/testprogress && CONSOLE_ARTIFACTS=$(CURDIR)/out/artifacts $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -json

test: deps ## run every test, then the concurrent packages again under the race detector
	@echo "==> every test (fixture/line, station/server and ca-client/cabench take a minute or more)"
	@$(GOTEST) ./... | .bin/testprogress
	@echo "==> the concurrent packages again under the race detector"
	@$(GOTEST) -race $(RACE_PKGS) | .bin/testprogress

test-reports: deps ## the printable reports' tests, leaving the PDFs, HTML and page-one PNGs in out/reports-test/
	rm -rf out/reports-test
	PRINTABLE_ARTIFACTS=$(CURDIR)/out/reports-test $(GO) test -count=1 ./reports/printable/
	@echo "==> rendered reports and their page-one images: out/reports-test/"

# The CI-sized chaos run; make test runs the same scenario (fixture/chaos TestChaosLine). The
# target run: make chaos CHAOS_ARGS="--units 1000 --swtpm-units 250 --slots 64 --kills 50 --power-losses 100 --agent-kills 50 --duration 1h"
CHAOS_ARGS ?= --units 24 --slots 8 --kills 3 --power-losses 4 --agent-kills 4

chaos: deps ## a line against a real stationd while it is SIGKILLed, swtpm units lose power, agents die and CAs fail; then the invariants (CHAOS_ARGS)
	@echo "==> building stationd and the fixture (the first build compiles the C TPM simulator: about a minute)"
	@$(call ticking,still building,CGO_ENABLED=1 $(GO) build -o .bin/ ./fixture/cmd/fixture ./station/cmd/stationd)
	rm -rf out/chaos
	.bin/fixture chaos $(CHAOS_ARGS) --stationd .bin/stationd --out out/chaos

# Native Go fuzz targets as package:target pairs (go test -fuzz takes one target per run). Their
# seed corpora (f.Add and testdata/fuzz) run in every plain go test as regression tests.
FUZZ_TARGETS := \
	./station/ekcert:FuzzVerifyEKCert ./station/ekcert:FuzzParseSAN ./station/ekcert:FuzzExtractDER \
	./station/attest:FuzzCheckEK ./station/attest:FuzzCheckDevID ./station/attest:FuzzChallenge \
	./station/attest:FuzzCheckCSR ./station/attest:FuzzVerifySignature ./station/attest:FuzzCheckIAK ./station/attest:FuzzCheckCertify \
	./ca-client/est:FuzzParseCertsOnly ./ca-client/est:FuzzDecodeBase64Body \
	./ca-client/est:FuzzSanitizeMessage ./ca-client/est:FuzzParseRetryAfter \
	./station/config:FuzzConfig ./station/config:FuzzCheckAzureIoTIdentity \
	./station/gateway:FuzzValidateHello ./station/workflow:FuzzHardwareModuleName ./station/workflow:FuzzRestore \
	./station/workflow:FuzzAgentResult ./device-agent/agent:FuzzDispatch ./station/store:FuzzOpen ./station/store:FuzzRecordJSON ./station/store:FuzzRecordEncoders \
	./reports/export:FuzzVerify ./reports/export:FuzzParseKey ./reports/export:FuzzAuditLine ./reports/internal/jsonindent:FuzzAppend \
	./reports/traveler:FuzzIdentifyIntent
FUZZTIME ?= 1m
# Each input that finds new coverage is minimized for at most this many runs. Go's default, 60 s
# of wall time, let every worker spend a whole 10 s run minimizing inputs of kilobytes (PKCS#7,
# configuration files, 64 KiB store files: removing bytes one and two at a time is quadratic)
# and report only the few runs that finished; a time limit instead races the worker's own and
# the coordinator kills and restarts the worker, setup and all.
FUZZMINIMIZE ?= 100x

fuzz: ## run every fuzz target for FUZZTIME each (default 1m; new crashers land in the package's testdata/fuzz)
	@set -o pipefail; mkdir -p out; : > out/fuzz-summary.txt; \
	for pt in $(FUZZ_TARGETS); do \
		pkg=$${pt%%:*}; target=$${pt##*:}; corpus=$$pkg/testdata/fuzz/$$target; \
		for try in 1 2; do \
			before=$$(ls $$corpus 2>/dev/null | wc -l); \
			echo "==> $$target in $$pkg for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) $$pkg 2>&1 | tee out/fuzz-last.txt && break; \
			if [ $$try = 1 ] && [ "$$before" = "$$(ls $$corpus 2>/dev/null | wc -l)" ] && grep -qx '    context deadline exceeded' out/fuzz-last.txt; then \
				echo "==> $$target: Go 1.26's fuzz coordinator failed on its own -fuzztime deadline and wrote no crasher (Go issue 75804, fixed in Go 1.27): once more"; \
				continue; \
			fi; \
			exit 1; \
		done; \
		echo "$$target ($$pkg): $$(grep -o 'execs: [0-9]*' out/fuzz-last.txt | tail -n 1)" >> out/fuzz-summary.txt; \
	done; \
	echo "==> executions per target in $(FUZZTIME)"; cat out/fuzz-summary.txt

fuzz-ci: ## every fuzz target for 10 s (CI)
	@$(MAKE) --no-print-directory fuzz FUZZTIME=10s

bench: ## run the Go benchmarks (the store at 100k units: make bench-store)
	$(GO) test -run '^$$' -bench . -skip 'BenchmarkListUnits|BenchmarkRestart' -benchmem ./...

.PHONY: bench-audit
BENCH_UNITS ?= 10000
bench-audit: ## the store's open (its page check) and start-up verification (with the store's size a unit), the QA export and its offline verification over BENCH_UNITS units written as the workflow writes them (default 10000; 100000 builds for long)
	BENCH_UNITS=$(BENCH_UNITS) $(GO) test -count=1 -run '^$$' -bench 'BenchmarkVerify$$|BenchmarkExport' -benchtime=1x -timeout 2h ./station/store/ ./reports/export/

bench-line: ## the simulated line against its bound: 64 units (both EKs, ECC EK only), then 16 to 64 units (about 2 min)
	$(GO) test -count=1 -run '^$$' -bench 'BenchmarkLine' -benchtime=1x ./fixture/line/

bench-scale: ## the station at scale on the device MODEL: 1,024 units with 64 and 256 slots, and the CA-bound line (50 requests/s); one table (a few minutes)
	$(GO) test -count=1 -run '^$$' -bench 'BenchmarkScale' -benchtime=1x -timeout 30m ./fixture/line/

# The store at 100,000 seeded units (STORE_BENCH_UNITS): each figure is the median of 3 runs.
bench-store: ## the store at 100k units: a page of 100 at any offset (< 20 ms) and a restart with every unit in flight resumed (< 1 s); one table (several minutes)
	@set -o pipefail; mkdir -p out; \
	$(GO) test -count=1 -run '^$$' -bench 'BenchmarkListUnits' -benchtime=3x -timeout 60m ./station/api/ | tee out/bench-store.txt && \
	$(GO) test -count=1 -run '^$$' -bench 'BenchmarkRestart' -benchtime=3x -timeout 60m ./station/server/ | tee -a out/bench-store.txt && \
	awk 'function v(u,  i) { for (i = 3; i < NF; i += 2) if ($$(i+1) == u) return $$i; return "-" } \
		function row(f, t, m, c, ok) { printf "| %-46s | %-9s | %12s | %11s | %-4s |\n", f, t, m, c, ok } \
		BEGIN { print ""; print "store at scale (medians of 3 runs; cpu: CPU time of the process, server and client)"; \
			row("figure", "target", "measured ms", "cpu ms", "met"); row("---", "---", "---", "---", "---") } \
		/^BenchmarkListUnits\// { n = $$1; sub(/^BenchmarkListUnits\//, "", n); sub(/-[0-9]+$$/, "", n); \
			m = v("ms/page"); row("list units: page of 100, " n, "< 20 ms", m, v("cpu-ms/page"), (m != "-" && m < 20 ? "yes" : "no")) } \
		/^BenchmarkRestart/ { r = v("ready_without_verify_ms"); a = v("ready_ms"); w = v("verify_ms"); \
			row("restart: ready + in flight resumed, no verify", "< 1000 ms", r, "", (r != "-" && r < 1000 ? "yes" : "no")); \
			row("restart: the same with the full audit verify", "< 1000 ms", a, "", (a != "-" && a < 1000 ? "yes" : "no")); \
			row("  of which the audit verification", "< 5000 ms", w, "", (w != "-" && w < 5000 ? "yes" : "no")); \
			row("  store open (page check of every page)", "", v("open_ms"), "", ""); \
			row("  units in flight resumed (count)", "", v("in_flight"), "", "") }' out/bench-store.txt

bench-ca: ## benchmark the CA client against the dev EST CA (batched vs naive, 1-256 callers; about 90 s)
	$(GO) test -count=1 -run '^$$' -bench . -benchmem ./ca-client/cabench/

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@for m in $(NESTED_MODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done

generate: deps ## regenerate protobuf code (protoc from Debian, plugins pinned in go.mod)
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install protobuf-compiler"; exit 1; }
	$(GO) build -o .bin/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
	PATH="$(CURDIR)/.bin:$$PATH" protoc -I . --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative $(PROTOS)

generate-check: generate ## fail when committed generated code is stale
	@git diff --exit-code -- proto || { echo "generated code is stale: run make generate and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- proto)" || { git status --porcelain -- proto; echo "untracked generated files: run make generate and commit"; exit 1; }

# The EST interop server is a module of its own (it needs go-tpm v0.3).
NESTED_MODULES := ca-client/interop/estserver

tidy-check: ## fail when go.mod/go.sum (also of the nested interop module) are not tidy
	@for m in $(NESTED_MODULES); do (cd $$m && $(GO) mod tidy -diff) || { echo "$$m: go.mod/go.sum not tidy: run go mod tidy there"; exit 1; }; done
	$(GO) mod tidy
	@git diff --exit-code -- go.mod go.sum || { echo "go.mod/go.sum not tidy: run go mod tidy and commit"; exit 1; }

demo: deps ## run a simulated line of 8 units (station, dev CAs, TPM simulators) into out/demo
	@echo "==> building the fixture (the first build compiles the C TPM simulator: about a minute)"
	@$(call ticking,still building,CGO_ENABLED=1 $(GO) build -o .bin/fixture ./fixture/cmd/fixture)
	rm -rf out/demo
	.bin/fixture run --units 8 --out out/demo

dev-config: ## write fresh dev material into deploy/dev/ (gitignored) and check deploy/station.example.toml with it
	CGO_ENABLED=1 $(GO) run ./fixture/cmd/fixture devpki --out deploy/dev
	$(GO) run ./station/cmd/stationd -config deploy/station.example.toml -check

clean: ## remove build output
	rm -rf bin .bin out
