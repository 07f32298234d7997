// Post-renderer fixture fail: refuses every input with an Extism error and exit code 1.
package main

import "github.com/extism/go-pdk"

func main() {}

//go:wasmexport helm_plugin_main
func helmPluginMain() int32 {
	_ = pdk.Input()
	pdk.SetErrorString("plugin says no: fail is a fixture that rejects every input")
	return 1
}
