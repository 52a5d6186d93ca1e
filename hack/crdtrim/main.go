// Command crdtrim fits an embedded PodTemplateSpec into a generated
// CustomResourceDefinition, in place, keeping everything else as
// controller-gen wrote it. `make manifests` runs it on the WorkerPool CRD's
// spec.template:
//
//   - it removes the field descriptions below the template: the Kubernetes
//     field documentation would more than double the CRD's size and push it
//     past what a client-side `kubectl apply` can store in its last-applied
//     annotation (256 KiB); `kubectl explain pod.spec` documents them already;
//
//   - it makes the template's containers optional: the operator adds the
//     worker container, so a template may set only pod-level fields;
//
//   - it bounds the template's containers (at most 32, names of at most 63
//     characters as Kubernetes requires, images of at most 4096), so that the
//     CEL rules that compare the worker container with the spec's
//     convenience fields have a cost the API server accepts.
//
//     go run ./hack/crdtrim FILE spec.template
package main

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: crdtrim CRD.yaml PROPERTY.PATH (e.g. spec.template)")
		os.Exit(2)
	}
	if err := trim(os.Args[1], strings.Split(os.Args[2], ".")); err != nil {
		fmt.Fprintln(os.Stderr, "crdtrim:", err)
		os.Exit(1)
	}
}

func trim(file string, path []string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	versions := lookup(doc.Content[0], "spec", "versions")
	if versions == nil || len(versions.Content) == 0 {
		return fmt.Errorf("%s: no spec.versions: not a CustomResourceDefinition", file)
	}
	for _, v := range versions.Content {
		schema := lookup(v, "schema", "openAPIV3Schema")
		for _, p := range path {
			schema = lookup(schema, "properties", p)
		}
		if schema == nil {
			return fmt.Errorf("%s: no property %s in version %s", file, strings.Join(path, "."), lookup(v, "name").Value)
		}
		for _, child := range schema.Content {
			dropDescriptions(child)
		}
		containers := lookup(schema, "properties", "spec", "properties", "containers")
		if containers == nil {
			return fmt.Errorf("%s: %s has no spec.containers: not a pod template", file, strings.Join(path, "."))
		}
		podSpec := lookup(schema, "properties", "spec")
		drop(podSpec, "required", "containers")
		set(containers, "maxItems", "32")
		set(lookup(containers, "items", "properties", "name"), "maxLength", "63")
		set(lookup(containers, "items", "properties", "image"), "maxLength", "4096")
	}
	var out bytes.Buffer
	if bytes.HasPrefix(data, []byte("---\n")) {
		out.WriteString("---\n") // controller-gen's document start
	}
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	enc.CompactSeqIndent() // as controller-gen writes it
	if err := enc.Encode(&doc); err != nil {
		return err
	}
	return os.WriteFile(file, out.Bytes(), 0o644)
}

// lookup follows keys through nested mappings; nil when one is missing.
func lookup(n *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				next = n.Content[i+1]
			}
		}
		n = next
	}
	return n
}

// drop removes value from the sequence under key in mapping n, and the key
// when nothing is left.
func drop(n *yaml.Node, key, value string) {
	seq := lookup(n, key)
	if seq == nil {
		return
	}
	seq.Content = slices.DeleteFunc(seq.Content, func(e *yaml.Node) bool { return e.Value == value })
	if len(seq.Content) > 0 {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			n.Content = slices.Delete(n.Content, i, i+2)
			return
		}
	}
}

// set sets key to an integer value in mapping n, replacing an existing one.
func set(n *yaml.Node, key, value string) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			n.Content[i+1].Value = value
			return
		}
	}
	n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key},
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: value})
}

// dropDescriptions removes every "description" key of the schema below n.
// A property that is itself named "description" is a key of a "properties"
// mapping, whose value is a schema mapping: it is kept.
func dropDescriptions(n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		for _, c := range n.Content {
			dropDescriptions(c)
		}
		return
	}
	kept := n.Content[:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "description" && v.Kind == yaml.ScalarNode {
			continue
		}
		dropDescriptions(v)
		kept = append(kept, k, v)
	}
	n.Content = kept
}
