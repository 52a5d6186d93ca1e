// Command manager is the WorkerPool operator: it runs each WorkerPool's
// worker pods and writes what they measure into the pool's status.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	workersv1alpha1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
	"github.com/seed-a17b38e7/workerpool-operator/controllers"
	"github.com/seed-a17b38e7/workerpool-operator/internal/memlimit"
)

// options are the manager's flags.
type options struct {
	metricsAddr, probeAddr  string
	pprofAddr               string
	secureMetrics, http2    bool
	leaderElect             bool
	leaderElectionNamespace string
	watchNamespaces         string
	statusInterval          time.Duration
	scrapeTimeout           time.Duration
	scrapeConcurrency       int
	reconcilers             int
	qps                     float64
	burst                   int
	readQueues              bool
	autoscaleInterval       time.Duration
}

func main() {
	var o options
	fs := flag.CommandLine
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8443", "Address of the operator's metrics endpoint (HTTPS with authentication and authorization unless --metrics-secure=false); \"0\" disables it.")
	fs.BoolVar(&o.secureMetrics, "metrics-secure", true, "Serve metrics over HTTPS, allowing only callers that are authenticated and authorized (TokenReview and SubjectAccessReview) to read them.")
	fs.BoolVar(&o.http2, "enable-http2", false, "Allow HTTP/2 on the metrics server (off by default because of the HTTP/2 rapid-reset CVEs).")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	fs.StringVar(&o.pprofAddr, "pprof-bind-address", "", "Address of Go's /debug/pprof endpoints (heap and CPU profiles), unauthenticated: bind it to localhost or reach it with kubectl port-forward. Empty or \"0\" disables it.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "Elect a leader, so that only one of several operator replicas reconciles.")
	fs.StringVar(&o.leaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader election lease (default: the operator's own namespace).")
	fs.StringVar(&o.watchNamespaces, "watch-namespaces", "", "Comma-separated namespaces to watch; empty watches all namespaces.")
	fs.DurationVar(&o.statusInterval, "status-interval", 15*time.Second, "How often each pool's pods are scraped and its status refreshed (pod and child changes also refresh it).")
	fs.DurationVar(&o.scrapeTimeout, "scrape-timeout", 2*time.Second, "Time limit for one pod's /metrics.")
	fs.IntVar(&o.scrapeConcurrency, "scrape-concurrency", 64, "Pod scrapes in flight at once, across all pools.")
	fs.IntVar(&o.reconcilers, "max-concurrent-reconciles", 4, "WorkerPools reconciled in parallel.")
	fs.Float64Var(&o.qps, "kube-api-qps", 0, "Client-side limit on requests per second to the API server; 0 leaves it to the server's API Priority and Fairness (controller-runtime's default). Creating a pool takes about five requests.")
	fs.IntVar(&o.burst, "kube-api-burst", 0, "Burst above --kube-api-qps (default twice the QPS).")
	fs.BoolVar(&o.readQueues, "read-queues", true, "Read each pool's queue backlog from its database (through the Secret spec.queue.databaseSecretRef names: needs get on secrets) for status.queue and spec.autoscaling; false turns both off.")
	fs.DurationVar(&o.autoscaleInterval, "autoscale-interval", 2*time.Second, "How often a pool with spec.autoscaling is measured and decided on: the autoscaler's reaction time to a burst.")
	zo := zap.Options{}
	zo.BindFlags(fs)
	flag.Parse()

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zo)))
	if err := run(o); err != nil {
		ctrl.Log.WithName("setup").Error(err, "operator stopped")
		os.Exit(1)
	}
}

func (o options) validate() error {
	var errs []error
	if o.statusInterval < time.Second {
		errs = append(errs, fmt.Errorf("--status-interval=%s: must be at least 1s", o.statusInterval))
	}
	if o.scrapeTimeout <= 0 || o.scrapeTimeout > o.statusInterval {
		errs = append(errs, fmt.Errorf("--scrape-timeout=%s: must be positive and at most --status-interval (%s)", o.scrapeTimeout, o.statusInterval))
	}
	if o.scrapeConcurrency < 1 {
		errs = append(errs, fmt.Errorf("--scrape-concurrency=%d: must be at least 1", o.scrapeConcurrency))
	}
	if o.qps < 0 || o.burst < 0 {
		errs = append(errs, fmt.Errorf("--kube-api-qps=%v --kube-api-burst=%d: must not be negative", o.qps, o.burst))
	}
	if o.autoscaleInterval < 500*time.Millisecond {
		errs = append(errs, fmt.Errorf("--autoscale-interval=%s: must be at least 500ms", o.autoscaleInterval))
	}
	if o.reconcilers < 1 {
		errs = append(errs, fmt.Errorf("--max-concurrent-reconciles=%d: must be at least 1", o.reconcilers))
	}
	return errors.Join(errs...)
}

func namespaces(list string) []string {
	var out []string
	for _, ns := range strings.Split(list, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			out = append(out, ns)
		}
	}
	return out
}

func run(o options) error {
	if err := o.validate(); err != nil {
		return err
	}
	log := ctrl.Log.WithName("setup")
	if soft, code := memlimit.Set("/sys/fs/cgroup", "/proc/self/exe"); soft > 0 {
		log.Info("Go memory limit set from the container's", "bytes", soft, "codeBytes", code, "share", memlimit.Share)
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(workersv1alpha1.AddToScheme(scheme))

	var tlsOpts []func(*tls.Config)
	if !o.http2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{BindAddress: o.metricsAddr, SecureServing: o.secureMetrics, TLSOpts: tlsOpts}
	if o.secureMetrics {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	if o.qps > 0 {
		cfg.QPS, cfg.Burst = float32(o.qps), o.burst
		if cfg.Burst == 0 {
			cfg.Burst = int(2 * o.qps)
		}
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  o.probeAddr,
		PprofBindAddress:        o.pprofAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        "workerpool-operator.workers.tasker.dev",
		LeaderElectionNamespace: o.leaderElectionNamespace,
		// The operator stops reconciling at once when it loses the lease.
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(namespaces(o.watchNamespaces)),
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	poolMetrics, err := controllers.NewPoolMetrics(metrics.Registry)
	if err != nil {
		return fmt.Errorf("register pool metrics: %w", err)
	}
	var queues *controllers.QueueReader
	if o.readQueues {
		// A reading is reused for most of the autoscale interval, so every
		// pool of a queue shares one query per interval.
		queues = &controllers.QueueReader{Secrets: mgr.GetAPIReader(), MaxAge: o.autoscaleInterval * 3 / 4, Timeout: 5 * time.Second}
		defer queues.Close()
	}
	r := &controllers.WorkerPoolReconciler{
		Client:            mgr.GetClient(),
		APIReader:         mgr.GetAPIReader(),
		Queues:            queues,
		AutoscaleInterval: o.autoscaleInterval,
		Recorder:          mgr.GetEventRecorder(controllers.FieldOwner),
		Scraper:           controllers.NewScraper(o.scrapeTimeout, o.scrapeConcurrency),
		Metrics:           poolMetrics,
		StatusInterval:    o.statusInterval,
	}
	if err := r.SetupWithManager(mgr, o.reconcilers); err != nil {
		return fmt.Errorf("set up WorkerPool controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	// Ready once the caches have synced, so a rollout of the operator does not
	// pass traffic (or the lease) to a replica that cannot see its pools yet.
	if err := mgr.AddReadyzCheck("readyz", func(req *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return errors.New("caches not synced")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("add ready check: %w", err)
	}
	log.Info("starting operator", "watchNamespaces", namespaces(o.watchNamespaces), "statusInterval", o.statusInterval,
		"scrapeTimeout", o.scrapeTimeout, "leaderElection", o.leaderElect, "readQueues", o.readQueues, "autoscaleInterval", o.autoscaleInterval)
	return mgr.Start(ctrl.SetupSignalHandler())
}
