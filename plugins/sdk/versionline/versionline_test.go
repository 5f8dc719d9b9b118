package versionline

import (
	"runtime"
	"testing"
)

func TestFormat(t *testing.T) {
	got := Format("ikto-hook-route", "v0.4.0-3-gabc1234", "abc1234")
	want := "ikto-hook-route v0.4.0-3-gabc1234 (commit abc1234, " + runtime.Version() + ")"
	if got != want {
		t.Errorf("Format = %q, want %q", got, want)
	}
}
