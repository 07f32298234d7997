// Post-renderer fixture add-label: adds one label to metadata.labels of every document and
// keeps everything else (other fields, comments, annotations such as
// postrenderer.helm.sh/postrender-filename) as it was.
//
// The label is KEY=VALUE from the Extism config keys "label" and "value" when "label" is
// set, else from extraArgs "--label KEY=VALUE" (or "--label=KEY=VALUE"), else
// postrendered-by=add-label.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/extism/go-pdk"
	"go.yaml.in/yaml/v3"
)

type input struct {
	Manifests string   `json:"manifests"`
	ExtraArgs []string `json:"extraArgs"`
}

type output struct {
	Manifests string `json:"manifests"`
}

func main() {}

//go:wasmexport helm_plugin_main
func helmPluginMain() int32 {
	// Finish a garbage collection before returning to the host, or an instance that is
	// called again keeps growing its memory (the Go scheduler does not run between calls).
	defer runtime.GC()
	var in input
	if err := json.Unmarshal(pdk.Input(), &in); err != nil {
		pdk.SetError(fmt.Errorf("add-label: decoding input: %w", err))
		return 1
	}
	key, value, err := label(in.ExtraArgs)
	if err != nil {
		pdk.SetError(fmt.Errorf("add-label: %w", err))
		return 1
	}
	out, err := addLabel(in.Manifests, key, value)
	if err != nil {
		pdk.SetError(fmt.Errorf("add-label: %w", err))
		return 1
	}
	if err := pdk.OutputJSON(output{Manifests: out}); err != nil {
		pdk.SetError(fmt.Errorf("add-label: writing output: %w", err))
		return 1
	}
	return 0
}

func label(args []string) (string, string, error) {
	if k, ok := pdk.GetConfig("label"); ok && k != "" {
		v, _ := pdk.GetConfig("value")
		return k, v, nil
	}
	for i, a := range args {
		var kv string
		switch {
		case a == "--label" && i+1 < len(args):
			kv = args[i+1]
		case strings.HasPrefix(a, "--label="):
			kv = strings.TrimPrefix(a, "--label=")
		default:
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return "", "", fmt.Errorf("--label wants KEY=VALUE, got %q", kv)
		}
		return k, v, nil
	}
	return "postrendered-by", "add-label", nil
}

func addLabel(manifests, key, value string) (string, error) {
	dec := yaml.NewDecoder(strings.NewReader(manifests))
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	enc.CompactSeqIndent() // "- item" at the parent's indentation, as Helm and kubectl write it
	for i := 0; ; i++ {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("document %d: %w", i, err)
		}
		if len(doc.Content) == 0 {
			continue // an empty document
		}
		obj := doc.Content[0]
		if obj.Kind != yaml.MappingNode {
			return "", fmt.Errorf("document %d is not a mapping", i)
		}
		labels := mapping(mapping(obj, "metadata"), "labels")
		set(labels, key, value)
		if err := enc.Encode(&doc); err != nil {
			return "", fmt.Errorf("document %d: %w", i, err)
		}
	}
	if err := enc.Close(); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// mapping returns the mapping under key in m, creating it (or replacing a null) if needed.
func mapping(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			v := m.Content[i+1]
			if v.Kind != yaml.MappingNode {
				*v = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			}
			return v
		}
	}
	v := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
	return v
}

func set(m *yaml.Node, key, value string) {
	v := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
}
