// Package kernellane runs ikto's integration scenarios on a Linux kernel
// that has the wireguard module, under qemu, with the agents' wg_backend
// forced to kernel: the production path, which the host running the tests
// may not have (no module, or a kernel that is not a distribution's).
//
// The guest is a Debian kernel from /boot, the newest that can serve (see
// chooseKernel), with a tiny initramfs made at run time (busybox and the
// virtio and 9p modules, decompressed when the distribution ships them
// compressed, see Initramfs). It mounts the host's own root read-only over
// 9p as its root, with tmpfs on /tmp and /run, so the host's ip, wg, nft,
// ping and wireguard-go run inside unchanged, and a second, writable 9p
// share (the lane's work directory, at /run/ikto-lane)
// carries the binaries in and the results out. The lane's own binary is the
// guest's init (Guest), which runs the compiled test binaries, writes their
// output to the share and powers the machine off; the host side (Run) boots
// it, bounds it in time, kills it by PID on any way out, and reports each
// scenario.
package kernellane
