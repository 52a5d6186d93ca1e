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
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	workersv1alpha1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
	"github.com/seed-a17b38e7/workerpool-operator/controllers"
	"github.com/seed-a17b38e7/workerpool-operator/internal/pgtest"
)

var (
	cfg     *rest.Config
	k8s     client.Client
	testEnv *envtest.Environment
	// operatorCache is the in-process operator's cache: what its reconciler
	// reads objects from.
	operatorCache client.Reader
)

// operatedNS is the namespace the in-process operator watches. Pools
// elsewhere ("default", "samples") are left alone, so the API-only tests
// see no reconciler; benchNS is for the operator binary the benchmark runs.
const (
	operatedNS = "operated"
	benchNS    = "bench"
)

// Timing of the operator under test: a short status interval so status
// tests follow metric changes quickly.
const (
	statusInterval = 300 * time.Millisecond
	scrapeTimeout  = time.Second
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
	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err = testEnv.Start()
	if err != nil {
		// Start can fail after launching etcd and the API server (e.g. a
		// CRD the server refuses): stop them so no process outlives the test.
		_ = testEnv.Stop()
		fmt.Fprintf(os.Stderr, "start envtest: %v\n", err)
		return 1
	}
	defer func() { _ = testEnv.Stop() }()
	k8s, err = client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, ns := range []string{"samples", operatedNS, benchNS} {
		if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	stop, err := startOperator()
	if err != nil {
		fmt.Fprintf(os.Stderr, "start operator: %v\n", err)
		return 1
	}
	defer stop()
	return pgtest.Run(m, pgtest.Options{})
}

// startOperator runs the real manager and reconciler, as cmd/manager wires
// them, against the test API server. stop cancels it and waits for it.
func startOperator() (stop func(), err error) {
	log.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapLevel())))
	mgr, err := manager.New(cfg, manager.Options{
		Scheme:                 scheme.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  controllers.CacheOptions([]string{operatedNS}),
	})
	if err != nil {
		return nil, err
	}
	pm, err := controllers.NewPoolMetrics(ctrlmetrics.Registry)
	if err != nil {
		return nil, err
	}
	r := &controllers.WorkerPoolReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder(controllers.FieldOwner),
		Scraper: controllers.NewScraper(scrapeTimeout, 64), Metrics: pm, StatusInterval: statusInterval,
		Queues:            &controllers.QueueReader{Secrets: mgr.GetAPIReader(), MaxAge: statusInterval / 2, Timeout: 5 * time.Second},
		AutoscaleInterval: statusInterval,
	}
	if err := r.SetupWithManager(mgr, 4); err != nil {
		return nil, err
	}
	operatorCache = mgr.GetCache()
	c, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(c) }()
	if !mgr.GetCache().WaitForCacheSync(c) {
		cancel()
		return nil, fmt.Errorf("operator caches did not sync: %v", <-done)
	}
	return func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintf(os.Stderr, "operator: %v\n", err)
		}
	}, nil
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return c
}

func keyOf(o client.Object) client.ObjectKey { return client.ObjectKeyFromObject(o) }

// zapLevel is info, or debug with WORKERPOOL_TEST_DEBUG=1.
func zapLevel() zapcore.Level {
	if os.Getenv("WORKERPOOL_TEST_DEBUG") == "1" {
		return zapcore.DebugLevel
	}
	return zapcore.InfoLevel
}
