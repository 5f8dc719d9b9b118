package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ikto-mesh/ikto/plugins/sdk/sdktest"
)

func TestParseConfig(t *testing.T) {
	metric := func(m int) *int { return &m }
	sdktest.CheckConfigs(t, parseConfig, []sdktest.ConfigCase[config]{
		{Name: "absent", Raw: "", Want: config{Table: 254, Protocol: 73}},
		{Name: "null", Raw: "null", Want: config{Table: 254, Protocol: 73}},
		{Name: "empty object", Raw: "{}", Want: config{Table: 254, Protocol: 73}},
		{Name: "all keys", Raw: `{"table": 100, "metric": 0, "protocol": 201}`, Want: config{Table: 100, Metric: metric(0), Protocol: 201}},
		{Name: "large table", Raw: `{"table": 4294967295}`, Want: config{Table: 4294967295, Protocol: 73}},
		{Name: "unknown key", Raw: `{"tabel": 100}`, WantErr: `unknown field "tabel"`},
		{Name: "table as text", Raw: `{"table": "main"}`, WantErr: "table"},
		{Name: "table unspec", Raw: `{"table": 0}`, WantErr: "table: 0 is reserved"},
		{Name: "table local", Raw: `{"table": 255}`, WantErr: "table: 255 is reserved"},
		{Name: "table too big", Raw: `{"table": 4294967296}`, WantErr: "table: 4294967296 is out of range"},
		{Name: "negative metric", Raw: `{"metric": -1}`, WantErr: "metric: -1 is out of range"},
		{Name: "static protocol", Raw: `{"protocol": 4}`, WantErr: `protocol: 4 is "static"`},
		{Name: "bird's protocol", Raw: `{"protocol": 12}`, WantErr: `protocol: 12 is "bird"`},
		{Name: "protocol too big", Raw: `{"protocol": 256}`, WantErr: "protocol: 256 is out of range"},
	}, cmp.AllowUnexported(config{}))
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
