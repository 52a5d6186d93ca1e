// Package kubeobjects holds what the install tests (test/manifests for the
// kustomize layout in config/, test/chart for the Helm chart) share to check
// rendered Kubernetes objects: strict decoding of multi-document YAML into
// typed objects, the Prometheus operator types the install ships, the checks
// every install of the operator must pass (RBAC bindings, the restricted
// manager Deployment, the ServiceMonitors), and the metric families the
// operator and the worker really serve, against which monitors, alert rules
// and dashboards are checked.
//
// Both installs must hold to the same standard, so each check is here once,
// with the stricter of the rules the two tests used to apply separately.
package kubeobjects

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// Object is one document of a rendered install, kept both raw (for checks on
// fields a typed decode would drop, or a second strict decode) and decoded.
type Object struct {
	Kind, Name, Namespace string
	Raw                   []byte
	// Decoded is the document as a client-go type, a CRD, *ServiceMonitor or
	// *PrometheusRule: Decode accepts no other kind.
	Decoded any
}

// Objects is a whole rendered install, in the order it was rendered, so
// tests can look objects up by kind and name and report what was there.
type Objects []Object

// Find returns the object of that kind and name, in namespace unless
// namespace is "" (any namespace), and whether there is one: for checks
// that an object is absent, or that a reference resolves.
func (objs Objects) Find(kind, name, namespace string) (Object, bool) {
	for _, o := range objs {
		if o.Kind == kind && o.Name == name && (namespace == "" || o.Namespace == namespace) {
			return o, true
		}
	}
	return Object{}, false
}

// Get returns the object of that kind and name (in any namespace), failing
// the test, with what was rendered instead, if there is none.
func (objs Objects) Get(t testing.TB, kind, name string) Object {
	t.Helper()
	o, ok := objs.Find(kind, name, "")
	if !ok {
		t.Fatalf("no %s %q among %v", kind, name, objs.Names())
	}
	return o
}

// Names lists the objects as Kind/name, for failure messages and for
// comparing a render with the expected set.
func (objs Objects) Names() []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.Kind+"/"+o.Name)
	}
	return out
}

// codecs decodes client-go's kinds and CRDs, strictly, so a misspelt or
// misplaced field in a rendered object fails instead of vanishing.
var codecs = func() serializer.CodecFactory {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(scheme))
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict)
}()

// StrictDecoder decodes one document of a client-go kind or a CRD strictly:
// for the source files (config/rbac, config/crd) a render is compared with,
// held to the same rule as the render.
func StrictDecoder() runtime.Decoder { return codecs.UniversalDeserializer() }

// Decode reads the multi-document YAML a tool rendered (source names the
// tool, for messages) and decodes every document strictly: into its
// client-go type, a CRD, or the Prometheus operator types of this package.
// A document of any other kind, one without apiVersion, kind or name, a
// Prometheus operator object of another version, or a render with no object
// at all fails the test. Empty and comment-only documents (what a template
// that renders nothing leaves) are skipped.
func Decode(t testing.TB, source string, out []byte) Objects {
	t.Helper()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	var objs Objects
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read %s output: %v", source, err)
		}
		var content any
		if err := yaml.Unmarshal(doc, &content); err != nil {
			t.Fatalf("decode %s: %v", doc, err)
		}
		if content == nil {
			continue // empty or comments only
		}
		var meta metav1.PartialObjectMetadata
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("decode %s: %v", doc, err)
		}
		if meta.Kind == "" || meta.APIVersion == "" || meta.Name == "" {
			t.Fatalf("document without apiVersion, kind or name:\n%s", doc)
		}
		o := Object{Kind: meta.Kind, Name: meta.Name, Namespace: meta.Namespace, Raw: doc}
		switch meta.Kind {
		case "ServiceMonitor":
			var m ServiceMonitor
			DecodeStrict(t, o, &m)
			o.Decoded = &m
		case "PrometheusRule":
			var r PrometheusRule
			DecodeStrict(t, o, &r)
			o.Decoded = &r
		default:
			obj, _, err := StrictDecoder().Decode(doc, nil, nil)
			if err != nil {
				t.Fatalf("%s %s does not decode strictly: %v\n%s", meta.Kind, meta.Name, err, doc)
			}
			o.Decoded = obj
		}
		if (meta.Kind == "ServiceMonitor" || meta.Kind == "PrometheusRule") && meta.APIVersion != "monitoring.coreos.com/v1" {
			t.Errorf("%s %s is %s, want monitoring.coreos.com/v1", meta.Kind, meta.Name, meta.APIVersion)
		}
		objs = append(objs, o)
	}
	if len(objs) == 0 {
		t.Fatalf("%s rendered no objects:\n%s", source, out)
	}
	return objs
}

// DecodeStrict decodes an object's raw document into a struct, failing on
// any field the struct does not have: for the parts of an object a test
// reads through its own type.
func DecodeStrict(t testing.TB, o Object, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(o.Raw, into); err != nil {
		t.Fatalf("%s %s: %v", o.Kind, o.Name, err)
	}
}

// Typed returns an object's decoded value as T, failing the test if it
// decoded as anything else, so checks can read typed fields directly.
func Typed[T any](t testing.TB, o Object) T {
	t.Helper()
	v, ok := o.Decoded.(T)
	if !ok {
		t.Fatalf("%s %s decoded as %T", o.Kind, o.Name, o.Decoded)
	}
	return v
}

// clusterScoped are the cluster-scoped kinds an install of the operator
// renders.
var clusterScoped = []string{"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}

// Namespaced says whether objects of kind live in a namespace, for the
// checks that namespaced objects name the install's namespace and
// cluster-scoped ones name none.
func Namespaced(kind string) bool { return !slices.Contains(clusterScoped, kind) }
