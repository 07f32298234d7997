module rudder.local/e2e/wasm-plugins

go 1.26.0

require (
	github.com/extism/go-pdk v1.1.3
	go.yaml.in/yaml/v3 v3.0.4
)
