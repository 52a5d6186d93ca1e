// Package envtest runs the WorkerPool API against a real kube-apiserver and
// etcd (controller-runtime's envtest), because schema validation, CEL rules,
// defaulting and subresources are enforced by the API server and nowhere
// else.
package envtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	workersv1alpha1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

var (
	cfg *rest.Config
	k8s client.Client
)

// TestMain starts one API server for the package. KUBEBUILDER_ASSETS comes
// from `make test`; without it the binaries are built (or found cached) by
// hack/build-envtest.sh, since setup-envtest cannot download here.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := filepath.Abs("../..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		out, err := exec.Command("bash", filepath.Join(root, "hack/build-envtest.sh")).Output()
		if err != nil {
			fmt.Fprintf(os.Stderr, "envtest binaries: %v\n", err)
			return 1
		}
		os.Setenv("KUBEBUILDER_ASSETS", strings.TrimSpace(string(out)))
	}
	if err := workersv1alpha1.AddToScheme(scheme.Scheme); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err = env.Start()
	if err != nil {
		// Start can fail after launching etcd and the API server (e.g. a
		// CRD the server refuses): stop them so no process outlives the test.
		_ = env.Stop()
		fmt.Fprintf(os.Stderr, "start envtest: %v\n", err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	k8s, err = client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "samples"}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return c
}

func keyOf(o client.Object) client.ObjectKey { return client.ObjectKeyFromObject(o) }
