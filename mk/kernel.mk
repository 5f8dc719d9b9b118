# make test-kernel: the kernel lane (integration/kernellane). Boots the newest
# /boot/vmlinuz-* that can serve (the wireguard, tun, veth, bridge, virtio and
# 9p modules, plain or compressed with xz, zstd or gzip; it names each newer
# kernel it passed over and why) under qemu-system-x86_64 (KVM when it boots
# the guest, else TCG), with the host's root read-only over 9p,
# and runs the integration scenarios with wg_backend kernel forced, plus
# pkg/wgdev's real-device tests. Prints the kernel it booted and each
# scenario; the exit status is the result. About 3 minutes on 2 cores.
# Needs root and `apt-get install qemu-system-x86 busybox-static
# linux-image-amd64` besides the integration prerequisites (wireguard-tools,
# wireguard-go, nftables, iproute2, iputils-ping); with
# IKTO_REQUIRE_INTEGRATION=1 a missing one fails instead of skipping.
# KERNEL_LANE_FLAGS passes flags through, e.g. KERNEL_LANE_FLAGS='-run Restart -keep -v'.
KERNEL_LANE_FLAGS ?=
.PHONY: test-kernel kernel-lane-bin
# make test runs the lane too (after build and vet, before the module tests).
test: test-kernel
kernel-lane-bin:
	$(GO) build -C integration -o $(BIN)/ikto-kernel-lane ./kernellane/cmd/ikto-kernel-lane
test-kernel: build kernel-lane-bin
	$(BIN)/ikto-kernel-lane -bin-dir $(BIN) $(KERNEL_LANE_FLAGS)
