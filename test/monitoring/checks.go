package monitoring

import (
	"maps"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seed-a17b38e7/workerpool-operator/test/kubeobjects"
)

// Scrapes are the scrape jobs of the operator's and the workers'
// ServiceMonitors, and the labels each gives its series.
type Scrapes struct {
	Operator, Worker                         ScrapeConfig
	OperatorTargetLabels, WorkerTargetLabels []string
}

// CheckScrapes generates the scrape jobs of the operator's and the
// workers' ServiceMonitors as prometheus-operator does, and runs Kubernetes
// endpoints through their relabeling with Prometheus's own code: the worker
// job scrapes a pool's pod on its metrics port, labelled with the pod, its
// namespace and its pool (workerpool, as the operator's series name it),
// and nothing else (not the operator, another port or a finished pod); the
// operator job scrapes only the manager behind metricsService, over HTTPS
// with a bearer token, keeping the series' own labels.
func CheckScrapes(t testing.TB, operatorMonitor, workerMonitor *kubeobjects.ServiceMonitor, metricsService *corev1.Service) Scrapes {
	t.Helper()
	job := func(sm *kubeobjects.ServiceMonitor) ScrapeConfig {
		t.Helper()
		scs, err := ScrapeConfigs(sm, ScrapeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(scs) != 1 {
			t.Fatalf("ServiceMonitor %s makes %d scrape jobs, want 1", sm.Name, len(scs))
		}
		return scs[0]
	}
	s := Scrapes{Operator: job(operatorMonitor), Worker: job(workerMonitor)}

	poolService := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "payments", Namespace: "shop", Labels: kubeobjects.PoolServiceLabels("payments")}}
	worker := PodEndpoint{Service: poolService, Port: "metrics", Pod: "payments-6f9c7d-x2k4q", Container: "worker",
		Address: "10.88.0.7:9090", Phase: corev1.PodRunning}
	if metricsService == nil || len(metricsService.Spec.Ports) == 0 {
		t.Fatalf("metrics Service %v has no port", metricsService)
	}
	manager := PodEndpoint{Service: metricsService, Port: metricsService.Spec.Ports[0].Name, Pod: metricsService.Name + "-7c5b9-q8m2z",
		Container: "manager", Address: "10.88.0.5:8443", Phase: corev1.PodRunning}

	expect := func(sc ScrapeConfig, p PodEndpoint, want map[string]string) {
		t.Helper()
		got, kept, err := Target(sc, p)
		if err != nil {
			t.Fatalf("job %s: %v", sc.JobName, err)
		}
		switch {
		case want == nil && kept:
			t.Errorf("job %s scrapes %s/%s port %s (pod %s, %s): %v", sc.JobName, p.Service.Namespace, p.Service.Name, p.Port, p.Pod, p.Phase, got)
		case want != nil && !kept:
			t.Errorf("job %s does not scrape %s/%s port %s (pod %s)", sc.JobName, p.Service.Namespace, p.Service.Name, p.Port, p.Pod)
		case want != nil && !maps.Equal(got, want):
			t.Errorf("job %s labels %s/%s pod %s\n  %v\nwant\n  %v", sc.JobName, p.Service.Namespace, p.Service.Name, p.Pod, got, want)
		}
	}
	expect(s.Worker, worker, map[string]string{"namespace": "shop", "workerpool": "payments", "pod": worker.Pod, "container": "worker",
		"service": "payments", "job": "payments", "endpoint": "metrics", "instance": worker.Address})
	otherPort, finished := worker, worker
	otherPort.Port = "https"
	finished.Phase = corev1.PodSucceeded
	for _, p := range []PodEndpoint{otherPort, finished, manager} {
		expect(s.Worker, p, nil)
	}
	if s.Worker.Scheme != "http" || s.Worker.MetricsPath != "/metrics" || s.Worker.Authorization != nil {
		t.Errorf("worker job scrapes %s %s with %+v, want plain http /metrics", s.Worker.Scheme, s.Worker.MetricsPath, s.Worker.Authorization)
	}

	expect(s.Operator, manager, map[string]string{"namespace": metricsService.Namespace, "pod": manager.Pod, "container": "manager",
		"service": metricsService.Name, "job": metricsService.Name, "endpoint": "https", "instance": manager.Address})
	expect(s.Operator, worker, nil)
	if s.Operator.Scheme != "https" || s.Operator.MetricsPath != "/metrics" || s.Operator.Authorization == nil ||
		s.Operator.Authorization.CredentialsFile == "" || !s.Operator.HonorLabels {
		t.Errorf("operator job scrapes %s %s with %+v, honor_labels %t: want https /metrics with a bearer token, keeping the series' labels",
			s.Operator.Scheme, s.Operator.MetricsPath, s.Operator.Authorization, s.Operator.HonorLabels)
	}

	var err error
	if s.WorkerTargetLabels, err = TargetLabels(s.Worker, worker); err != nil {
		t.Fatal(err)
	}
	if s.OperatorTargetLabels, err = TargetLabels(s.Operator, manager); err != nil {
		t.Fatal(err)
	}
	return s
}
