package logbuf

import (
	"fmt"
	"testing"
)

func TestBuffer(t *testing.T) {
	b := New(t, "log")
	fmt.Fprintln(b, `{"@message":"route added","prefix":"fd10:1::/48"}`)
	fmt.Fprintln(b, `not json, as a plain logger writes`)
	fmt.Fprintln(b, `{"@message":"route added","prefix":"fd10:2::/48"}`)
	fmt.Fprintln(b, `{"@message":"route removed"}`)
	if got := b.Entries("route added"); len(got) != 2 || got[1]["prefix"] != "fd10:2::/48" {
		t.Errorf("Entries(route added) = %v, want the two lines in order", got)
	}
	if got := b.Entries("nothing"); len(got) != 0 {
		t.Errorf("Entries(nothing) = %v", got)
	}
	if !b.Contains("plain logger") || b.Contains("absent") {
		t.Errorf("Contains is wrong on %q", b)
	}
}
