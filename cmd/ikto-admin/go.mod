module github.com/ikto-mesh/ikto/cmd/ikto-admin

go 1.26.0

require github.com/ikto-mesh/ikto/pkg v0.0.0

replace github.com/ikto-mesh/ikto/pkg => ../../pkg
