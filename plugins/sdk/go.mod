module github.com/ikto-mesh/ikto/plugins/sdk

go 1.26.0
