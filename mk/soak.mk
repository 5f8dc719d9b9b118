# make soak: issue 11's chaos soak (integration/soak_test.go) for SOAK of
# chaos in all, split between one NATS server and a 3-server cluster: agent
# SIGKILLs, NATS restarts, device deletions, hostile records, joins,
# evictions, re-addressing and bucket deletions under a device sampler, then
# the invariants and the figures. make test runs the same test for 60 s.
# Needs root, like make integration. A failed run keeps its agents' logs (the
# failures point into them) and prints where.
#   SOAK_SEED=<n>         replay the fault sequence of a printed seed
#   SOAK_NATS=single      one topology only (or cluster, or debian: Debian's
#                         nats-server); default both (single,cluster); a list
#                         takes a chaos time per topology: single,debian:5m
#   SOAK_SKIP=forged,...  leave fault kinds out
#   SOAK_DEVICE_FAULTS=0  leave device deletions out (agents before 9e524fd)
#   SOAK_TIMEOUT=2h       go test's bound, for a SOAK longer than about 50m
SOAK               ?= 10m
SOAK_TIMEOUT       ?= 60m
SOAK_SEED          ?=
SOAK_NATS          ?= both
SOAK_SKIP          ?=
SOAK_DEVICE_FAULTS ?=
.PHONY: soak
soak: build
	cd integration && IKTO_BIN_DIR=$(BIN) IKTO_REQUIRE_INTEGRATION=1 IKTO_SOAK=$(SOAK) \
		IKTO_SOAK_SEED=$(SOAK_SEED) IKTO_SOAK_NATS=$(SOAK_NATS) IKTO_SOAK_SKIP=$(SOAK_SKIP) \
		IKTO_SOAK_DEVICE_FAULTS=$(SOAK_DEVICE_FAULTS) \
		$(GO) test -count=1 -timeout $(SOAK_TIMEOUT) -v -run '^TestSoak$$' .
