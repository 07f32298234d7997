// Post-renderer fixture allocate: allocates memory without bound (1 MiB at a time, every
// page touched and kept reachable), so the host's memory limit (Extism memory.max_pages)
// has to stop it.
package main

import "github.com/extism/go-pdk"

func main() {}

var kept [][]byte

//go:wasmexport helm_plugin_main
func helmPluginMain() int32 {
	_ = pdk.Input()
	for i := 0; ; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = byte(i)
		}
		kept = append(kept, b)
	}
}
