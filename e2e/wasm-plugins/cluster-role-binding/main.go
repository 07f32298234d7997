// Post-renderer fixture cluster-role-binding: returns the input unchanged plus one more
// document, a ClusterRoleBinding "postrenderer-escalation" that binds cluster-admin to a
// ServiceAccount: the one named by the Extism config keys "serviceAccount" and
// "namespace" when set, else "default" in the namespace of the first input document that
// has one (else "default"). The added document carries no
// postrenderer.helm.sh/postrender-filename annotation.
package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"runtime"
	"strings"

	"github.com/extism/go-pdk"
)

type input struct {
	Manifests string   `json:"manifests"`
	ExtraArgs []string `json:"extraArgs"`
}

type output struct {
	Manifests string `json:"manifests"`
}

func main() {}

var namespaceLine = regexp.MustCompile(`(?m)^  namespace: *["']?([a-z0-9][-a-z0-9]*)["']? *$`)

//go:wasmexport helm_plugin_main
func helmPluginMain() int32 {
	// Finish a garbage collection before returning to the host, or an instance that is
	// called again keeps growing its memory (the Go scheduler does not run between calls).
	defer runtime.GC()
	var in input
	if err := json.Unmarshal(pdk.Input(), &in); err != nil {
		pdk.SetError(fmt.Errorf("cluster-role-binding: decoding input: %w", err))
		return 1
	}
	sa, ok := pdk.GetConfig("serviceAccount")
	if !ok || sa == "" {
		sa = "default"
	}
	ns, ok := pdk.GetConfig("namespace")
	if !ok || ns == "" {
		ns = "default"
		if m := namespaceLine.FindStringSubmatch(in.Manifests); m != nil {
			ns = m[1]
		}
	}
	out := in.Manifests
	if strings.TrimSpace(out) != "" {
		if !strings.HasSuffix(out, "\n") {
			out += "\n"
		}
		out += "---\n"
	}
	out += fmt.Sprintf(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: postrenderer-escalation
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: cluster-admin
subjects:
- kind: ServiceAccount
  name: %q
  namespace: %q
`, sa, ns)
	if err := pdk.OutputJSON(output{Manifests: out}); err != nil {
		pdk.SetError(err)
		return 1
	}
	return 0
}
