package sdk

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDecodeConfig(t *testing.T) {
	type cfg struct {
		Table string `json:"table"`
	}
	for _, raw := range []string{"", "  ", "null", " null\n"} {
		got := cfg{Table: "default"}
		if err := DecodeConfig(json.RawMessage(raw), &got); err != nil || got.Table != "default" {
			t.Errorf("DecodeConfig(%q) = %+v, %v; want the defaults kept", raw, got, err)
		}
	}
	got := cfg{Table: "default"}
	if err := DecodeConfig(json.RawMessage(`{"table": "t2"}`), &got); err != nil || got.Table != "t2" {
		t.Errorf("DecodeConfig(table t2) = %+v, %v", got, err)
	}
	if err := DecodeConfig(json.RawMessage(`{"tabel": "x"}`), &got); err == nil || !strings.Contains(err.Error(), `unknown field "tabel"`) {
		t.Errorf("DecodeConfig(unknown key) = %v, want the key named", err)
	}
}
