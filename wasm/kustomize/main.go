// Command kustomize.wasm is rudder's built-in "kustomize" post-renderer: kustomize's own Go
// code (sigs.k8s.io/kustomize/api/krusty) run inside the Extism sandbox, as a Helm 4
// `postrenderer/v1` plugin in message format.
//
// Entry point: helm_plugin_main (exported with //go:wasmexport).
//
// Input (Extism input, JSON):  {"manifests": "<multi-document YAML>", "extraArgs": [...]}
// (extraArgs and any other field are ignored).
//
// Extism config key "kustomization" (required): a JSON object with the fields of Flux's
// HelmRelease spec.postRenderers[].kustomize:
//
//	{"patches": [{"patch": "<strategic merge or JSON 6902 patch>",
//	              "target": {"group", "version", "kind", "name", "namespace",
//	                         "labelSelector", "annotationSelector"}}],
//	 "images":  [{"name", "newName", "newTag", "digest"}]}
//
// Unknown fields are an error. `{}` is valid and only normalises the documents.
//
// Output (Extism output, JSON): {"manifests": "<multi-document YAML>"}, the documents in
// input order (sortOptions fifo), every annotation kept (postrenderer.helm.sh/... included).
//
// On failure the function sets the Extism error (pdk.SetError) and returns 1.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/extism/go-pdk"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/resid"
)

// ConfigKey is the Extism config key holding the kustomization (JSON).
const ConfigKey = "kustomization"

const (
	root          = "/postrender"
	resourcesFile = "helm-manifests.yaml"
)

type input struct {
	Manifests string   `json:"manifests"`
	ExtraArgs []string `json:"extraArgs"`
}

type output struct {
	Manifests string `json:"manifests"`
}

// Flux's kustomize post-renderer fields (helm-controller api/v2 Kustomize).
type kustomizeSpec struct {
	Patches []patch `json:"patches"`
	Images  []image `json:"images"`
}

type patch struct {
	Patch  string    `json:"patch"`
	Target *selector `json:"target"`
}

type selector struct {
	Group              string `json:"group"`
	Version            string `json:"version"`
	Kind               string `json:"kind"`
	Name               string `json:"name"`
	Namespace          string `json:"namespace"`
	AnnotationSelector string `json:"annotationSelector"`
	LabelSelector      string `json:"labelSelector"`
}

type image struct {
	Name    string `json:"name"`
	NewName string `json:"newName"`
	NewTag  string `json:"newTag"`
	Digest  string `json:"digest"`
}

func main() {}

//go:wasmexport helm_plugin_main
func helmPluginMain() (rc int32) {
	defer func() {
		if r := recover(); r != nil {
			pdk.SetError(fmt.Errorf("kustomize post-renderer panicked: %v\n%s", r, debug.Stack()))
			rc = 1
		}
	}()
	// An exported function returns to the host without letting the Go scheduler finish a
	// garbage collection, so an instance that is called again would keep growing its memory:
	// collect before returning.
	defer runtime.GC()
	out, err := run()
	if err != nil {
		pdk.SetError(err)
		return 1
	}
	if err := pdk.OutputJSON(output{Manifests: out}); err != nil {
		pdk.SetError(fmt.Errorf("writing output: %w", err))
		return 1
	}
	return 0
}

func run() (string, error) {
	var in input
	// Lenient: fields a later Helm adds to the message are none of this module's business.
	if err := json.Unmarshal(pdk.Input(), &in); err != nil {
		return "", fmt.Errorf("decoding input message: %w", err)
	}
	raw, ok := pdk.GetConfig(ConfigKey)
	if !ok {
		return "", fmt.Errorf("config key %q is not set", ConfigKey)
	}
	var spec kustomizeSpec
	if err := decodeStrict([]byte(raw), &spec); err != nil {
		return "", fmt.Errorf("decoding config %q: %w", ConfigKey, err)
	}
	return build(in.Manifests, &spec)
}

// decodeStrict rejects unknown fields and trailing data.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

func kustomization(spec *kustomizeSpec) (*types.Kustomization, error) {
	k := &types.Kustomization{
		TypeMeta: types.TypeMeta{
			APIVersion: types.KustomizationVersion,
			Kind:       types.KustomizationKind,
		},
		Resources: []string{resourcesFile},
		// Keep the documents in the order Helm rendered them.
		SortOptions: &types.SortOptions{Order: types.FIFOSortOrder},
	}
	for i, p := range spec.Patches {
		if strings.TrimSpace(p.Patch) == "" {
			return nil, fmt.Errorf("patches[%d]: patch is empty", i)
		}
		kp := types.Patch{Patch: p.Patch}
		if p.Target != nil {
			kp.Target = &types.Selector{
				ResId: resid.ResId{
					Gvk:       resid.Gvk{Group: p.Target.Group, Version: p.Target.Version, Kind: p.Target.Kind},
					Name:      p.Target.Name,
					Namespace: p.Target.Namespace,
				},
				AnnotationSelector: p.Target.AnnotationSelector,
				LabelSelector:      p.Target.LabelSelector,
			}
		}
		k.Patches = append(k.Patches, kp)
	}
	for i, im := range spec.Images {
		if im.Name == "" {
			return nil, fmt.Errorf("images[%d]: name is empty", i)
		}
		k.Images = append(k.Images, types.Image{
			Name: im.Name, NewName: im.NewName, NewTag: im.NewTag, Digest: im.Digest,
		})
	}
	return k, nil
}

func build(manifests string, spec *kustomizeSpec) (string, error) {
	k, err := kustomization(spec)
	if err != nil {
		return "", fmt.Errorf("invalid kustomization: %w", err)
	}
	// JSON is YAML: kustomize reads this file with its usual (strict) loader.
	kbytes, err := json.Marshal(k)
	if err != nil {
		return "", fmt.Errorf("encoding kustomization.yaml: %w", err)
	}
	fs := filesys.MakeFsInMemory()
	if err := fs.MkdirAll(root); err != nil {
		return "", err
	}
	if err := fs.WriteFile(root+"/"+resourcesFile, []byte(manifests)); err != nil {
		return "", err
	}
	if err := fs.WriteFile(root+"/kustomization.yaml", kbytes); err != nil {
		return "", err
	}
	opts := krusty.MakeDefaultOptions()
	// The kustomization sets sortOptions; leaving the CLI-style option unspecified
	// keeps kustomize from logging a "set in both places" warning.
	opts.Reorder = krusty.ReorderOptionUnspecified
	m, err := krusty.MakeKustomizer(opts).Run(fs, root)
	if err != nil {
		return "", fmt.Errorf("kustomize build: %s", clarify(err.Error()))
	}
	out, err := m.AsYaml()
	if err != nil {
		return "", fmt.Errorf("kustomize build: writing YAML: %w", err)
	}
	return string(out), nil
}

// kustomize reports a resource file it cannot load as "accumulation err='<why>': must build at
// directory: '<file>': file is not directory" (it tried the path as a file, then as a directory).
// Only <why> says something about the manifests.
var accumulationErr = regexp.MustCompile(`(?s)accumulation err='(.*)': must build at directory: '[^']*': file is not directory$`)

func clarify(msg string) string {
	return accumulationErr.ReplaceAllString(msg, "$1")
}
