// Post-renderer fixture loop: burns CPU forever and never returns, so the host's time
// limit (Extism timeout_ms) has to stop it.
package main

import "github.com/extism/go-pdk"

func main() {}

var sink uint64

//go:wasmexport helm_plugin_main
func helmPluginMain() int32 {
	_ = pdk.Input()
	x := uint64(1)
	for {
		x = x*6364136223846793005 + 1442695040888963407
		sink = x
	}
}
