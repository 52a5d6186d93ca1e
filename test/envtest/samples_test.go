package envtest

import (
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// Every sample under config/samples is accepted by the API server as is.
func TestSamplesApply(t *testing.T) {
	files, err := filepath.Glob("../../config/samples/workers_*.yaml")
	if err != nil || len(files) != 6 {
		t.Fatalf("samples: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(data, &u.Object); err != nil {
				t.Fatal(err)
			}
			u.SetNamespace("samples")
			if err := k8s.Create(ctx(t), u); err != nil {
				t.Fatalf("%s refused: %v", f, err)
			}
			if s, _, _ := unstructured.NestedString(u.Object, "spec", "drain", "timeout"); s == "" {
				t.Errorf("%s: defaults not applied: %v", f, u.Object["spec"])
			}
		})
	}
}
