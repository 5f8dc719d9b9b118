package userspace

import (
	"fmt"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/internal/netnstest"
)

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestZZOpenCPU(t *testing.T) {
	sfx := netnstest.Suffix(t)
	ns := netnstest.NewNamespace(t, "ikto-z-"+sfx)
	mesh := fmt.Sprintf("fd00:%s:%s", sfx[:4], sfx[4:])
	cfg := wgdev.Config{Name: "ikwz" + sfx, Address: netip.MustParsePrefix(mesh + ":1::1/32"), PrivateKey: wgtest.PrivateKey(t), ListenPort: 51820, MTU: 1420}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	gc0 := ms.NumGC
	c0, w0 := cpuNow(), time.Now()
	d := openIn(t, ns, cfg)
	c1, w1 := cpuNow(), time.Now()
	time.Sleep(200 * time.Millisecond)
	c2 := cpuNow()
	runtime.ReadMemStats(&ms)
	t.Logf("open: cpu %v wall %v; +200ms idle cpu %v; GCs %d heap %d MB", c1-c0, w1.Sub(w0), c2-c1, ms.NumGC-gc0, ms.HeapAlloc>>20)
	time.Sleep(time.Second)
	c3 := cpuNow()
	t.Logf("next 1 s idle: cpu %v", c3-c2)
	_ = d
}
