// Package hookv1 is the Go code protoc generates from
// proto/ikto/hook/v1/hook.proto (`make proto`; do not edit the .pb.go files).
// Only package sdk uses it: hook authors and the agent use sdk's Go types.
package hookv1
