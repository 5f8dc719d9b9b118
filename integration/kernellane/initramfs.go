package kernellane

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"strings"
)

// The 9p shares the guest mounts, and where.
const (
	rootTag  = "ikto-root" // the host's /, read-only
	laneTag  = "ikto-lane" // the lane's work directory, writable
	laneDir  = "/run/ikto-lane"
	guestCmd = laneDir + "/ikto-kernel-lane" // the lane's own binary, copied in
	planFile = laneDir + "/plan.json"
	// msize is 9p's largest message; bigger means fewer round trips when the
	// guest reads the 50 MB test binaries.
	msize = 512 * 1024
)

// FatalMarker starts the line the initramfs prints when the guest cannot
// get to its init; the host then reports the line.
const FatalMarker = "ikto-lane: fatal:"

// Initramfs builds the gzipped cpio the guest boots with: busybox, the
// modules that mount the host's root over 9p (decompressed: busybox's
// insmod is given plain .ko files), and an /init script that
// mounts it with tmpfs on /tmp and /run and the lane's share at laneDir,
// then switches to it and runs the lane's own binary as the real init.
func Initramfs(k Kernel, busybox string) ([]byte, error) {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("%w: busybox %s: %w (apt-get install busybox-static)", ErrMissing, busybox, err)
	}
	mods, err := k.initramfsModules()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	c := &cpioWriter{w: zw}
	for _, d := range []string{"bin", "dev", "proc", "sys", "root", "modules"} {
		c.Dir(d)
	}
	// The kernel gives init /dev/console as stdin, stdout and stderr; it must
	// exist before devtmpfs is mounted.
	c.CharDev("dev/console", 0o600, 5, 1)
	c.File("bin/busybox", 0o755, bb)
	var names []string
	for _, m := range mods {
		c.File("modules/"+m.name, 0o644, m.data)
		names = append(names, m.name)
	}
	c.File("init", 0o755, []byte(initScript(names)))
	if err := c.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// initScript is the initramfs's /init. Every failure prints FatalMarker and
// powers off, so the host sees why instead of waiting for its timeout.
func initScript(modules []string) string {
	return fmt.Sprintf(`#!/bin/busybox sh
bb=/bin/busybox
fail() { echo "%[1]s $*"; $bb sync; $bb poweroff -f; }
$bb mount -t proc proc /proc || fail "mount /proc"
$bb mount -t sysfs sysfs /sys || fail "mount /sys"
$bb mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
for m in %[2]s; do $bb insmod /modules/$m || fail "insmod $m"; done
$bb mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=%[3]d,cache=loose %[4]s /root || fail "mount the host root (9p %[4]s)"
$bb mount -t tmpfs -o mode=1777 tmpfs /root/tmp || fail "mount /tmp"
$bb mount -t tmpfs -o mode=0755 tmpfs /root/run || fail "mount /run"
$bb mkdir -p /root%[5]s
$bb mount -t 9p -o trans=virtio,version=9p2000.L,msize=%[3]d %[6]s /root%[5]s || fail "mount the lane share (9p %[6]s)"
for d in proc sys dev; do $bb mount --move /$d /root/$d || fail "move /$d"; done
exec $bb switch_root /root %[7]s guest %[8]s
fail "switch_root"
`, FatalMarker, strings.Join(modules, " "), msize, rootTag, laneDir, laneTag, guestCmd, planFile)
}
