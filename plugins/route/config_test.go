package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseConfig(t *testing.T) {
	metric := func(m int) *int { return &m }
	tests := []struct {
		name    string
		raw     string
		want    config
		wantErr string // a substring of the error; "" for none
	}{
		{name: "absent", raw: "", want: config{Table: 254, Protocol: 73}},
		{name: "null", raw: "null", want: config{Table: 254, Protocol: 73}},
		{name: "empty object", raw: "{}", want: config{Table: 254, Protocol: 73}},
		{name: "all keys", raw: `{"table": 100, "metric": 0, "protocol": 201}`, want: config{Table: 100, Metric: metric(0), Protocol: 201}},
		{name: "large table", raw: `{"table": 4294967295}`, want: config{Table: 4294967295, Protocol: 73}},
		{name: "unknown key", raw: `{"tabel": 100}`, wantErr: `unknown field "tabel"`},
		{name: "table as text", raw: `{"table": "main"}`, wantErr: "table"},
		{name: "table unspec", raw: `{"table": 0}`, wantErr: "table: 0 is reserved"},
		{name: "table local", raw: `{"table": 255}`, wantErr: "table: 255 is reserved"},
		{name: "table too big", raw: `{"table": 4294967296}`, wantErr: "table: 4294967296 is out of range"},
		{name: "negative metric", raw: `{"metric": -1}`, wantErr: "metric: -1 is out of range"},
		{name: "static protocol", raw: `{"protocol": 4}`, wantErr: `protocol: 4 is "static"`},
		{name: "bird's protocol", raw: `{"protocol": 12}`, wantErr: `protocol: 12 is "bird"`},
		{name: "protocol too big", raw: `{"protocol": 256}`, wantErr: "protocol: 256 is out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig(json.RawMessage(tt.raw))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseConfig(%s) error = %v, want one containing %q", tt.raw, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseConfig(%s): %v", tt.raw, err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(config{})); diff != "" {
				t.Errorf("parseConfig(%s) (-want +got):\n%s", tt.raw, diff)
			}
		})
	}
}

func TestPriority(t *testing.T) {
	metric := func(m int) *int { return &m }
	tests := []struct {
		metric *int
		v6     bool
		want   int
	}{
		{nil, false, 0}, {nil, true, 1024}, {metric(0), true, 1024}, {metric(7), true, 7}, {metric(7), false, 7},
	}
	for _, tt := range tests {
		if got := (config{Metric: tt.metric}).priority(tt.v6); got != tt.want {
			t.Errorf("priority(metric %s, v6 %v) = %d, want %d", metricText(tt.metric), tt.v6, got, tt.want)
		}
	}
}
