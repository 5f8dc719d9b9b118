# ikto — build, test and demo. Everything runs per module: `go test ./...` does
# not work at the root of a go.work workspace.

GO        ?= go
BIN       := $(CURDIR)/bin
# One version for every binary, hook, man page and package: mk/version.sh
# says how it comes from a v* tag or CHANGELOG.md's top heading.
ifndef VERSION
VERSION   := $(shell mk/version.sh)
endif
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X github.com/ikto-mesh/ikto/pkg/cli.Version=$(VERSION) -X github.com/ikto-mesh/ikto/pkg/cli.Commit=$(COMMIT)
HOOK_LDFLAGS := -s -w -X github.com/ikto-mesh/ikto/plugins/sdk.Version=$(VERSION) -X github.com/ikto-mesh/ikto/plugins/sdk.Commit=$(COMMIT)
CMDS      := ikto-agent ikto-init ikto-admin
HOOKS     := route firewall exec
MODULES   := $(shell $(GO) list -m -f '{{.Dir}}')
TESTFLAGS ?= -count=1 -timeout 20m

.PHONY: all build install test unit integration vet demo fuzz-smoke clean

all: build

# Static binaries (CGO_ENABLED=0): no dependence on the host's libc, and
# 1.5 MB less resident memory per process than with it mapped in.
build:
	@test -n "$(VERSION)" || { echo "make: no version (mk/version.sh says why, above)" >&2; exit 1; }
	@mkdir -p $(BIN)
	@for c in $(CMDS); do \
		echo "build bin/$$c"; \
		CGO_ENABLED=0 $(GO) build -C cmd/$$c -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/$$c . || exit 1; \
	done
	@for h in $(HOOKS); do \
		echo "build bin/ikto-hook-$$h"; \
		CGO_ENABLED=0 $(GO) build -C plugins/$$h -trimpath -ldflags '$(HOOK_LDFLAGS)' -o $(BIN)/ikto-hook-$$h . || exit 1; \
	done

# make install PREFIX=/usr/local: the binaries and the systemd unit (its
# ExecStart points at $(PREFIX)/bin). DESTDIR stages into a package root.
PREFIX ?= /usr/local
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 0755 $(addprefix $(BIN)/,$(CMDS)) $(DESTDIR)$(PREFIX)/bin/
	install -d $(DESTDIR)$(PREFIX)/lib/ikto
	install -m 0755 $(addprefix $(BIN)/ikto-hook-,$(HOOKS)) $(DESTDIR)$(PREFIX)/lib/ikto/
	sed 's#/usr/local/bin/#$(PREFIX)/bin/#' dist/systemd/ikto-agent.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/ikto-agent.service
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/ikto-agent.service

# make test: unit and integration tests of every module. Integration tests need
# root, /dev/net/tun, iproute2 and ping; with IKTO_REQUIRE_INTEGRATION=1 (CI)
# a missing prerequisite fails instead of skipping.
# The 60 s chaos soak in make test replays TEST_SOAK_SEED (a sequence with
# copies of keys over live claims, NATS restarts, evictions and re-addressing)
# against one NATS server, and its first 30 s against Debian's nats-server
# 2.9.10, the oldest supported; make soak draws a fresh seed and runs the
# 3-server cluster too.
TEST_SOAK_SEED ?= 1796126624783034255
TEST_SOAK_NATS ?= single,debian:30s
test: build vet
	IKTO_BIN_DIR=$(BIN) IKTO_SOAK_SEED=$(TEST_SOAK_SEED) IKTO_SOAK_NATS=$(TEST_SOAK_NATS) \
		$(GO) test $(TESTFLAGS) $(addsuffix /...,$(MODULES))

unit:
	$(GO) test $(TESTFLAGS) -short $(addsuffix /...,$(MODULES))

integration: build
	IKTO_BIN_DIR=$(BIN) $(GO) test $(TESTFLAGS) -v -run . github.com/ikto-mesh/ikto/integration/...

vet:
	$(GO) vet $(addsuffix /...,$(MODULES))

# make demo: an embedded NATS and three hosts in network namespaces, the mesh
# and a ping matrix over WireGuard; KEEP=1 keeps it up until Ctrl-C. Needs root.
demo: build
	cd integration && IKTO_BIN_DIR=$(BIN) $(GO) run ./cmd/ikto-demo

# Each fuzz target runs briefly so the targets and their corpora cannot rot.
# Budgets are counts of inputs, not durations: Go 1.26's fuzz coordinator can
# fail a target with a bare "context deadline exceeded" when a -fuzztime
# duration ends while a worker is busy (golang/go#75804, fixed in Go 1.27).
# FuzzTableModel replays a history against the reference model per input, so it gets fewer.
FUZZTIME       ?= 20000x
FUZZTIME_TABLE ?= 2000x
fuzz-smoke:
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzRandomPrefix$$' -fuzztime $(FUZZTIME) ./ipam
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME) ./peer
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzTableModel$$' -fuzztime $(FUZZTIME_TABLE) ./peer
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzParseValidate$$' -fuzztime $(FUZZTIME) ./config

# make proto: regenerate the hook SDK's gRPC code (committed) from
# plugins/sdk/proto. Needs protoc (apt-get install -y protobuf-compiler; the
# committed code was made with libprotoc 3.21.12). The Go plugins are pinned
# here and installed into bin/tools, not into $PATH.
PROTOC_GEN_GO      := v1.36.12
PROTOC_GEN_GO_GRPC := v1.6.2
TOOLS              := $(BIN)/tools
.PHONY: proto
proto:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC)
	cd plugins/sdk && protoc --proto_path=proto \
		--plugin=protoc-gen-go=$(TOOLS)/protoc-gen-go --plugin=protoc-gen-go-grpc=$(TOOLS)/protoc-gen-go-grpc \
		--go_out=. --go_opt=module=github.com/ikto-mesh/ikto/plugins/sdk \
		--go-grpc_out=. --go-grpc_opt=module=github.com/ikto-mesh/ikto/plugins/sdk \
		ikto/hook/v1/hook.proto

# make bench: the benchmark suite (integration/bench, README "Performance"):
# propagation through 100, 1,000 and 10,000 agents, initial sync of 10,000
# records, idle cost, a 10-host mesh in network namespaces and data-plane
# throughput. Prints one table and writes $(BENCH_OUT); about 5 minutes.
# Needs root, iproute2, iputils-ping, /dev/net/tun, iperf3, wireguard-go and
# wireguard-tools. make bench-smoke runs every scenario at a size that takes
# seconds (CI), so the benchmark code cannot rot. The bench module builds
# on its own (GOWORK=off), like every module.
BENCH_OUT ?= $(CURDIR)/bench/results.json
.PHONY: bench bench-smoke bench-bin
bench-bin: build
	cd integration/bench && GOWORK=off $(GO) build -o $(BIN)/ikto-bench ./cmd/ikto-bench
	cd integration/bench && GOWORK=off $(GO) build -o $(BIN)/ikto-bench-agent ./cmd/ikto-bench-agent
bench: bench-bin
	IKTO_BIN_DIR=$(BIN) $(BIN)/ikto-bench -o $(BENCH_OUT)
bench-smoke: bench-bin
	IKTO_BIN_DIR=$(BIN) $(BIN)/ikto-bench -smoke -o $(CURDIR)/bench/smoke.json

include mk/package.mk

clean:
	rm -rf $(BIN)
include mk/kernel.mk
include mk/soak.mk
