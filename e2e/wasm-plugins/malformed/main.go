// Post-renderer fixture malformed: succeeds, but the manifests it returns are not YAML.
package main

import "github.com/extism/go-pdk"

type output struct {
	Manifests string `json:"manifests"`
}

func main() {}

//go:wasmexport helm_plugin_main
func helmPluginMain() int32 {
	_ = pdk.Input()
	if err := pdk.OutputJSON(output{Manifests: "key: [unclosed\n"}); err != nil {
		pdk.SetError(err)
		return 1
	}
	return 0
}
