// Command ikto-kernel-lane runs ikto's integration scenarios with kernel
// WireGuard inside a qemu guest (`make test-kernel`); see package kernellane.
//
//	ikto-kernel-lane [-kernel IMAGE] [-boot-dir /boot] [-modules-root /lib/modules] [-bin-dir DIR] [-run REGEXP] [-timeout 14m] [-accel auto|kvm|tcg] [-keep] [-v]
//
// Exit status: 0 every scenario passed (or, without IKTO_REQUIRE_INTEGRATION=1,
// the machine lacks a prerequisite and the lane was skipped), 1 a scenario
// failed or the lane could not run, 2 a usage error. Inside the guest the
// same binary is init: `ikto-kernel-lane guest PLAN`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ikto-mesh/ikto/integration/kernellane"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "guest" && os.Getpid() == 1 {
		kernellane.Guest(os.Args[2]) // never returns
	}
	os.Exit(run())
}

func run() int {
	var o kernellane.Options
	fs := flag.NewFlagSet("ikto-kernel-lane", flag.ContinueOnError)
	fs.StringVar(&o.Kernel, "kernel", "", "kernel image to boot (default: the newest vmlinuz-* in -boot-dir that can serve the lane)")
	fs.StringVar(&o.BootDir, "boot-dir", "/boot", "where the kernel images are")
	fs.StringVar(&o.ModulesRoot, "modules-root", "/lib/modules", "where the kernels' module trees are (another tree changes only what the initramfs carries)")
	fs.StringVar(&o.BinDir, "bin-dir", "", "the built ikto binaries (default: $IKTO_BIN_DIR, else the repository's bin/)")
	fs.StringVar(&o.Busybox, "busybox", "", "a statically linked busybox (default /bin/busybox)")
	fs.StringVar(&o.Accel, "accel", "auto", "auto (kvm if it boots the guest, else tcg), kvm or tcg")
	fs.IntVar(&o.MemoryMiB, "mem", 3072, "guest memory in MiB")
	fs.IntVar(&o.CPUs, "smp", 2, "guest CPUs")
	fs.DurationVar(&o.Timeout, "timeout", 0, "bound from boot to power-off (default 14m)")
	fs.StringVar(&o.Run, "run", "", "run only the scenarios this regexp matches")
	fs.BoolVar(&o.Keep, "keep", false, "keep the work directory (console log, test logs)")
	fs.BoolVar(&o.Verbose, "v", false, "print the whole guest console")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "ikto-kernel-lane: unexpected arguments %q\n", fs.Args())
		return 2
	}
	// Ctrl-C or SIGTERM cancel: qemu is killed by PID and the work
	// directory removed on the way out.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := kernellane.Run(ctx, o)
	switch {
	case errors.Is(err, kernellane.ErrMissing) && os.Getenv("IKTO_REQUIRE_INTEGRATION") != "1":
		fmt.Printf("ikto-kernel-lane: SKIP: %v (IKTO_REQUIRE_INTEGRATION=1 makes this a failure)\n", err)
		return 0
	case err != nil:
		fmt.Fprintf(os.Stderr, "ikto-kernel-lane: FAIL: %v\n", err)
		return 1
	case !ok:
		fmt.Println("ikto-kernel-lane: FAIL")
		return 1
	}
	fmt.Println("ikto-kernel-lane: PASS")
	return 0
}
