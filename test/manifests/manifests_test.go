// Package manifests proves the kustomize layout in config/: that
// config/default builds with the pinned kustomize into a complete, restricted
// install, that the Prometheus objects select what the operator and the
// workers really serve, and that every alert rule reads a metric the project
// really exposes.
package manifests

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	workersv1alpha1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
	"github.com/seed-a17b38e7/workerpool-operator/controllers"
	"github.com/seed-a17b38e7/workerpool-operator/internal/config"
	"github.com/seed-a17b38e7/workerpool-operator/internal/worker"
)

const (
	repoRoot   = "../.."
	namespace  = "workerpool-operator-system"
	namePrefix = "workerpool-operator-"
)

// ---------------------------------------------------------------------------
// config/default

func TestDefaultInstall(t *testing.T) {
	objs := build(t, filepath.Join(repoRoot, "config", "default"))

	// Every expected object, renamed and moved by config/default.
	for _, want := range []struct{ kind, name string }{
		{"Namespace", namespace},
		{"CustomResourceDefinition", "workerpools.workers.tasker.dev"},
		{"ServiceAccount", namePrefix + "controller-manager"},
		{"ClusterRole", namePrefix + "manager-role"},
		{"ClusterRoleBinding", namePrefix + "manager-rolebinding"},
		{"Role", namePrefix + "leader-election-role"},
		{"RoleBinding", namePrefix + "leader-election-rolebinding"},
		{"ClusterRole", namePrefix + "metrics-auth-role"},
		{"ClusterRoleBinding", namePrefix + "metrics-auth-rolebinding"},
		{"ClusterRole", namePrefix + "metrics-reader"},
		{"ClusterRole", namePrefix + "workerpool-editor-role"},
		{"ClusterRole", namePrefix + "workerpool-viewer-role"},
		{"Service", namePrefix + "controller-manager-metrics-service"},
		{"Deployment", namePrefix + "controller-manager"},
	} {
		objs.get(t, want.kind, want.name)
	}
	if len(objs) != 14 {
		t.Errorf("config/default renders %d objects, want 14: %v", len(objs), objs.names())
	}

	for _, o := range objs {
		switch {
		case o.kind == "Namespace" || o.kind == "CustomResourceDefinition":
			// Not prefixed: the Namespace is named by `namespace:`, a CRD's
			// name is fixed by its group and plural.
		case !strings.HasPrefix(o.name, namePrefix):
			t.Errorf("%s %q lacks the name prefix %q", o.kind, o.name, namePrefix)
		}
		if namespaced(o.kind) && o.namespace != namespace {
			t.Errorf("%s %s is in namespace %q, want %q", o.kind, o.name, o.namespace, namespace)
		}
		if !namespaced(o.kind) && o.namespace != "" {
			t.Errorf("cluster-scoped %s %s has namespace %q", o.kind, o.name, o.namespace)
		}
	}
	ns := typed[*corev1.Namespace](t, objs.get(t, "Namespace", namespace))
	if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
		t.Errorf("namespace pod-security enforce label = %q, want restricted", got)
	}

	checkBindings(t, objs)
	checkManagerBinding(t, objs)
	checkRoles(t, objs)
	checkDeployment(t, objs)
}

// checkBindings: every (Cluster)RoleBinding refers to a role and to
// ServiceAccounts that the install itself creates.
func checkBindings(t *testing.T, objs objects) {
	t.Helper()
	var n int
	for _, o := range objs {
		var ref rbacv1.RoleRef
		var subjects []rbacv1.Subject
		switch b := o.typed.(type) {
		case *rbacv1.ClusterRoleBinding:
			ref, subjects = b.RoleRef, b.Subjects
		case *rbacv1.RoleBinding:
			ref, subjects = b.RoleRef, b.Subjects
			if ref.Kind == "Role" {
				if r := objs.get(t, "Role", ref.Name); r.namespace != o.namespace {
					t.Errorf("RoleBinding %s/%s refers to Role %s in namespace %q", o.namespace, o.name, ref.Name, r.namespace)
				}
			}
		default:
			continue
		}
		n++
		if ref.APIGroup != rbacv1.GroupName {
			t.Errorf("%s %s: roleRef apiGroup %q", o.kind, o.name, ref.APIGroup)
		}
		objs.get(t, ref.Kind, ref.Name)
		if len(subjects) == 0 {
			t.Errorf("%s %s has no subjects", o.kind, o.name)
		}
		for _, s := range subjects {
			if s.Kind != rbacv1.ServiceAccountKind {
				t.Errorf("%s %s: subject %s %s, want only ServiceAccounts", o.kind, o.name, s.Kind, s.Name)
				continue
			}
			if sa := objs.get(t, "ServiceAccount", s.Name); sa.namespace != s.Namespace {
				t.Errorf("%s %s: subject ServiceAccount %s/%s, but it lives in %q", o.kind, o.name, s.Namespace, s.Name, sa.namespace)
			}
		}
	}
	if n != 3 {
		t.Errorf("found %d bindings, want 3 (manager, leader election, metrics auth)", n)
	}
}

func checkManagerBinding(t *testing.T, objs objects) {
	t.Helper()
	crb := typed[*rbacv1.ClusterRoleBinding](t, objs.get(t, "ClusterRoleBinding", namePrefix+"manager-rolebinding"))
	wantRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: namePrefix + "manager-role"}
	if crb.RoleRef != wantRef {
		t.Errorf("manager ClusterRoleBinding roleRef = %+v, want %+v", crb.RoleRef, wantRef)
	}
	wantSubjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: namePrefix + "controller-manager", Namespace: namespace}}
	if !slices.Equal(crb.Subjects, wantSubjects) {
		t.Errorf("manager ClusterRoleBinding subjects = %+v, want %+v", crb.Subjects, wantSubjects)
	}
	// The generated role is what the controllers' markers ask for; the
	// workerpools it manages are among it.
	mr := typed[*rbacv1.ClusterRole](t, objs.get(t, "ClusterRole", namePrefix+"manager-role"))
	if !allows(mr.Rules, workersv1alpha1.GroupVersion.Group, "workerpools", "watch") ||
		!allows(mr.Rules, workersv1alpha1.GroupVersion.Group, "workerpools/status", "patch") {
		t.Errorf("manager-role does not allow watching WorkerPools and patching their status: %+v", mr.Rules)
	}
}

func checkRoles(t *testing.T, objs objects) {
	t.Helper()
	le := typed[*rbacv1.Role](t, objs.get(t, "Role", namePrefix+"leader-election-role"))
	for _, verb := range []string{"get", "create", "update"} {
		if !allows(le.Rules, "coordination.k8s.io", "leases", verb) {
			t.Errorf("leader-election-role does not allow %s on leases", verb)
		}
	}
	if !allows(le.Rules, "", "events", "create") {
		t.Error("leader-election-role does not allow creating events")
	}

	auth := typed[*rbacv1.ClusterRole](t, objs.get(t, "ClusterRole", namePrefix+"metrics-auth-role"))
	if !allows(auth.Rules, "authentication.k8s.io", "tokenreviews", "create") ||
		!allows(auth.Rules, "authorization.k8s.io", "subjectaccessreviews", "create") {
		t.Errorf("metrics-auth-role must create tokenreviews and subjectaccessreviews: %+v", auth.Rules)
	}

	reader := typed[*rbacv1.ClusterRole](t, objs.get(t, "ClusterRole", namePrefix+"metrics-reader"))
	want := []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}
	if len(reader.Rules) != 1 || !slices.Equal(reader.Rules[0].NonResourceURLs, want[0].NonResourceURLs) ||
		!slices.Equal(reader.Rules[0].Verbs, want[0].Verbs) {
		t.Errorf("metrics-reader rules = %+v, want %+v", reader.Rules, want)
	}

	group := workersv1alpha1.GroupVersion.Group
	editor := typed[*rbacv1.ClusterRole](t, objs.get(t, "ClusterRole", namePrefix+"workerpool-editor-role"))
	for _, l := range []string{"rbac.authorization.k8s.io/aggregate-to-edit", "rbac.authorization.k8s.io/aggregate-to-admin"} {
		if editor.Labels[l] != "true" {
			t.Errorf("workerpool-editor-role lacks label %s=true", l)
		}
	}
	for _, verb := range []string{"create", "delete", "get", "list", "patch", "update", "watch"} {
		if !allows(editor.Rules, group, "workerpools", verb) {
			t.Errorf("workerpool-editor-role does not allow %s on workerpools", verb)
		}
	}
	if !allows(editor.Rules, group, "workerpools/scale", "update") {
		t.Error("workerpool-editor-role cannot scale workerpools")
	}
	viewer := typed[*rbacv1.ClusterRole](t, objs.get(t, "ClusterRole", namePrefix+"workerpool-viewer-role"))
	if viewer.Labels["rbac.authorization.k8s.io/aggregate-to-view"] != "true" {
		t.Error("workerpool-viewer-role lacks label rbac.authorization.k8s.io/aggregate-to-view=true")
	}
	for _, r := range viewer.Rules {
		for _, v := range r.Verbs {
			if v != "get" && v != "list" && v != "watch" {
				t.Errorf("workerpool-viewer-role grants %q on %v", v, r.Resources)
			}
		}
	}
	if !allows(viewer.Rules, group, "workerpools", "list") || !allows(viewer.Rules, group, "workerpools/status", "get") {
		t.Errorf("workerpool-viewer-role cannot read workerpools and their status: %+v", viewer.Rules)
	}
}

func checkDeployment(t *testing.T, objs objects) {
	t.Helper()
	d := typed[*appsv1.Deployment](t, objs.get(t, "Deployment", namePrefix+"controller-manager"))
	pod := d.Spec.Template.Spec
	if pod.ServiceAccountName != namePrefix+"controller-manager" {
		t.Errorf("serviceAccountName = %q, want the prefixed controller-manager", pod.ServiceAccountName)
	}
	if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil || !sel.Matches(labelSet(d.Spec.Template.Labels)) {
		t.Errorf("Deployment selector %v does not match its pod template labels %v (%v)", d.Spec.Selector, d.Spec.Template.Labels, err)
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g != 10 {
		t.Errorf("terminationGracePeriodSeconds = %v, want 10", g)
	}
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod securityContext.runAsNonRoot is not true")
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod seccompProfile is not RuntimeDefault")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("manager pod has %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if c.Name != "manager" || c.Image != "controller:latest" {
		t.Errorf("container %q image %q, want manager running controller:latest (make deploy sets IMG)", c.Name, c.Image)
	}
	if !slices.Equal(c.Command, []string{"/manager"}) {
		t.Errorf("command = %v, want [/manager]", c.Command)
	}
	wantArgs := []string{"--leader-elect", "--health-probe-bind-address=:8081", "--metrics-bind-address=:8443"}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args = %v, want %v", c.Args, wantArgs)
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("manager container has no securityContext")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("allowPrivilegeEscalation is not false")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("readOnlyRootFilesystem is not true")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Errorf("capabilities = %+v, want drop [ALL] and nothing added", sc.Capabilities)
	case sc.Privileged != nil && *sc.Privileged:
		t.Error("manager container is privileged")
	}

	probePort := flagPort(t, c.Args, "--health-probe-bind-address")
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.IntValue() != probePort {
			t.Errorf("%s probe GET %s on %s, want %s on %d", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path, probePort)
		}
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
		if req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
			t.Errorf("%s request %s / limit %s: want both set, request <= limit", r, req.String(), lim.String())
		}
	}

	// The metrics Service reaches the manager's metrics port, named https.
	svc := typed[*corev1.Service](t, objs.get(t, "Service", namePrefix+"controller-manager-metrics-service"))
	metricsPort := flagPort(t, c.Args, "--metrics-bind-address")
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "https" || int(svc.Spec.Ports[0].Port) != metricsPort ||
		svc.Spec.Ports[0].TargetPort.IntValue() != metricsPort {
		t.Errorf("metrics Service ports = %+v, want https %d -> %d", svc.Spec.Ports, metricsPort, metricsPort)
	}
	if len(svc.Spec.Selector) == 0 || !labelSet(svc.Spec.Selector).AsSelector().Matches(labelSet(d.Spec.Template.Labels)) {
		t.Errorf("metrics Service selector %v does not select the manager pods %v", svc.Spec.Selector, d.Spec.Template.Labels)
	}
}

// ---------------------------------------------------------------------------
// config/prometheus, as config/default includes it when its line is uncommented

func TestPrometheusOverlay(t *testing.T) {
	// Uncomment "#- ../prometheus" in a copy of config/, as a user would.
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(repoRoot, "config"))); err != nil {
		t.Fatal(err)
	}
	kfile := filepath.Join(dir, "default", "kustomization.yaml")
	k, err := os.ReadFile(kfile)
	if err != nil {
		t.Fatal(err)
	}
	const commented = "\n#- ../prometheus\n"
	if !bytes.Contains(k, []byte(commented)) {
		t.Fatalf("config/default/kustomization.yaml has no %q line to uncomment", strings.TrimSpace(commented))
	}
	if err := os.WriteFile(kfile, bytes.Replace(k, []byte(commented), []byte("\n- ../prometheus\n"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	objs := build(t, filepath.Join(dir, "default"))

	rule := objs.get(t, "PrometheusRule", namePrefix+"workerpool-alerts")
	opMon := objs.get(t, "ServiceMonitor", namePrefix+"controller-manager-metrics-monitor")
	wMon := objs.get(t, "ServiceMonitor", namePrefix+"worker-metrics-monitor")
	for _, o := range []object{rule, opMon, wMon} {
		if o.namespace != namespace {
			t.Errorf("%s %s in namespace %q, want %q", o.kind, o.name, o.namespace, namespace)
		}
	}
	if len(objs) != 17 {
		t.Errorf("config/default with ../prometheus renders %d objects, want 17: %v", len(objs), objs.names())
	}

	// The operator's monitor scrapes the metrics Service's https port with a
	// bearer token, keeping the pools' namespace label.
	var om serviceMonitor
	decodeStrict(t, opMon, &om)
	svc := typed[*corev1.Service](t, objs.get(t, "Service", namePrefix+"controller-manager-metrics-service"))
	if sel, err := metav1.LabelSelectorAsSelector(&om.Spec.Selector); err != nil || sel.Empty() || !sel.Matches(labelSet(svc.Labels)) {
		t.Errorf("operator ServiceMonitor selector %+v does not select the metrics Service (labels %v): %v", om.Spec.Selector, svc.Labels, err)
	}
	if om.Spec.NamespaceSelector != nil {
		t.Errorf("operator ServiceMonitor looks beyond its own namespace: %+v", om.Spec.NamespaceSelector)
	}
	if len(om.Spec.Endpoints) != 1 {
		t.Fatalf("operator ServiceMonitor has %d endpoints, want 1", len(om.Spec.Endpoints))
	}
	ep := om.Spec.Endpoints[0]
	if ep.Port != svc.Spec.Ports[0].Name || ep.Port != "https" || ep.Scheme != "https" || ep.Path != "/metrics" {
		t.Errorf("operator endpoint = %s %s %s, want https port https /metrics", ep.Scheme, ep.Port, ep.Path)
	}
	if ep.BearerTokenFile != "/var/run/secrets/kubernetes.io/serviceaccount/token" {
		t.Errorf("operator endpoint bearerTokenFile = %q: the manager authenticates every scrape", ep.BearerTokenFile)
	}
	if ep.TLSConfig == nil || !ep.TLSConfig.InsecureSkipVerify {
		t.Error("operator endpoint does not skip verifying the manager's self-signed certificate")
	}
	if !ep.HonorLabels {
		t.Error("operator endpoint must honor labels, or the pools' namespace label becomes exported_namespace")
	}

	// The worker monitor finds the per-pool headless Services in any
	// namespace, on the port the operator names, and labels series with the pool.
	var wm serviceMonitor
	decodeStrict(t, wMon, &wm)
	poolService := labelSet{"app.kubernetes.io/managed-by": "workerpool-operator", "app.kubernetes.io/name": "tasker-worker",
		workersv1alpha1.PoolLabel: "payments", "app.kubernetes.io/instance": "payments"}
	if sel, err := metav1.LabelSelectorAsSelector(&wm.Spec.Selector); err != nil || !sel.Matches(poolService) ||
		wm.Spec.Selector.MatchLabels["app.kubernetes.io/managed-by"] != "workerpool-operator" {
		t.Errorf("worker ServiceMonitor selector %+v must select by app.kubernetes.io/managed-by=workerpool-operator (%v)", wm.Spec.Selector, err)
	}
	if sel, _ := metav1.LabelSelectorAsSelector(&wm.Spec.Selector); sel.Matches(labelSet(svc.Labels)) {
		t.Error("worker ServiceMonitor also selects the operator's metrics Service")
	}
	if wm.Spec.NamespaceSelector == nil || !wm.Spec.NamespaceSelector.Any {
		t.Error("worker ServiceMonitor must look in every namespace (pools live in their teams' namespaces)")
	}
	if len(wm.Spec.Endpoints) != 1 {
		t.Fatalf("worker ServiceMonitor has %d endpoints, want 1", len(wm.Spec.Endpoints))
	}
	wep := wm.Spec.Endpoints[0]
	if wep.Port != workersv1alpha1.MetricsPortName || wep.Path != "/metrics" || (wep.Scheme != "" && wep.Scheme != "http") {
		t.Errorf("worker endpoint = %s %s %s, want http port %s /metrics", wep.Scheme, wep.Port, wep.Path, workersv1alpha1.MetricsPortName)
	}
	if got := relabelTargets(wm)[serviceLabelMeta(workersv1alpha1.PoolLabel)]; got != "workerpool" {
		t.Errorf("worker endpoint relabels the pool label into %q, want workerpool (as the operator's series)", got)
	}
}

// ---------------------------------------------------------------------------
// config/prometheus/prometheusrule.yaml

// seedAlerts are the five rules of the TAS-67 plan, over worker metrics.
var seedAlerts = map[string]struct {
	expr, severity string
	for_           time.Duration
}{
	"FFIPendingEventsHigh":       {"tasker_ffi_pending_events > 100", "warning", 30 * time.Second},
	"FFIOldestEventAging":        {"tasker_ffi_oldest_event_age_ms > 15000", "critical", 10 * time.Second},
	"CompletionChannelSaturated": {"tasker_channel_completion_saturation > 0.8", "warning", 30 * time.Second},
	"CompletionChannelCritical":  {"tasker_channel_completion_saturation > 0.95", "critical", 10 * time.Second},
	"CallbackTimeoutsHigh":       {"rate(tasker_callback_timeouts_total[5m]) > 1", "warning", time.Minute},
}

// conditionAlerts fire on the operator's condition gauge.
var conditionAlerts = map[string]struct {
	condType, status string
	for_             time.Duration
}{
	"WorkerPoolStarving":           {workersv1alpha1.ConditionStarving, "True", time.Minute},
	"WorkerPoolBackpressure":       {workersv1alpha1.ConditionBackpressure, "True", time.Minute},
	"WorkerPoolNotReady":           {workersv1alpha1.ConditionReady, "False", 10 * time.Minute},
	"WorkerPoolMetricsUnavailable": {workersv1alpha1.ConditionMetricsAvailable, "False", 5 * time.Minute},
}

func TestAlertRules(t *testing.T) {
	var pr prometheusRule
	readStrict(t, filepath.Join(repoRoot, "config", "prometheus", "prometheusrule.yaml"), &pr)
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" {
		t.Fatalf("prometheusrule.yaml is %s %s", pr.APIVersion, pr.Kind)
	}
	workerFams := workerMetrics(t)
	operatorFams := operatorMetrics(t)

	// Labels a rule's annotations may use: the series' own labels plus those
	// the ServiceMonitors add (Prometheus target labels, and the pool name
	// the worker monitor relabels in).
	var wm serviceMonitor
	readStrict(t, filepath.Join(repoRoot, "config", "prometheus", "worker_monitor.yaml"), &wm)
	targetLabels := []string{"job", "instance", "namespace", "service", "pod", "container", "endpoint"}
	workerTargetLabels := slices.Concat(targetLabels, slices.Collect(maps.Values(relabelTargets(wm))))

	seen := map[string]bool{}
	for _, g := range pr.Spec.Groups {
		if len(g.Rules) == 0 {
			t.Errorf("group %q has no rules", g.Name)
		}
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %q: a rule without an alert name (%q)", g.Name, r.Expr)
				continue
			}
			if seen[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			seen[r.Alert] = true
			t.Run(r.Alert, func(t *testing.T) {
				checkAlert(t, r, workerFams, operatorFams, workerTargetLabels, targetLabels)
			})
		}
	}
	for name := range seedAlerts {
		if !seen[name] {
			t.Errorf("seed alert %s is missing", name)
		}
	}
	for name := range conditionAlerts {
		if !seen[name] {
			t.Errorf("condition alert %s is missing", name)
		}
	}
	if len(seen) != len(seedAlerts)+len(conditionAlerts) {
		t.Errorf("%d alerts, want %d", len(seen), len(seedAlerts)+len(conditionAlerts))
	}
}

func checkAlert(t *testing.T, r rule, workerFams, operatorFams families, workerTargetLabels, targetLabels []string) {
	forDur, err := model.ParseDuration(r.For)
	if err != nil {
		t.Fatalf("for %q: %v", r.For, err)
	}
	expr := strings.Join(strings.Fields(r.Expr), " ")
	var fams families
	var available []string
	var mustName string // the label an annotation must show
	switch {
	case seedAlerts[r.Alert].expr != "":
		want := seedAlerts[r.Alert]
		if expr != want.expr {
			t.Errorf("expr = %q, want the seed's %q", expr, want.expr)
		}
		if time.Duration(forDur) != want.for_ || r.Labels["severity"] != want.severity {
			t.Errorf("for %s severity %q, want the seed's for %s severity %q", r.For, r.Labels["severity"], want.for_, want.severity)
		}
		fams, available, mustName = workerFams, workerTargetLabels, "<pod>"
	case conditionAlerts[r.Alert].condType != "":
		want := conditionAlerts[r.Alert]
		wantExpr := `workerpool_status_condition{type="` + want.condType + `",status="` + want.status + `"} == 1`
		if expr != wantExpr {
			t.Errorf("expr = %q, want %q (the gauge is 0 for a status the condition does not have)", expr, wantExpr)
		}
		if time.Duration(forDur) != want.for_ {
			t.Errorf("for %s, want %s", r.For, want.for_)
		}
		fams, available, mustName = operatorFams, targetLabels, "<workerpool>"
	default:
		t.Fatalf("alert %s is neither a seed alert nor a condition alert; add it to this test", r.Alert)
	}
	if s := r.Labels["severity"]; s != "warning" && s != "critical" {
		t.Errorf("severity label %q, want warning or critical", s)
	}

	// Every metric the expression reads is one the project serves (of the
	// right type for rate), with the labels it matches on.
	sels := selectors(t, expr)
	if len(sels) == 0 {
		t.Fatalf("no metric found in %q", expr)
	}
	var exprLabels []string
	for _, s := range sels {
		fam, ok := fams[s.name]
		if !ok {
			t.Errorf("%q reads %s, which the project does not expose (known: %v)", expr, s.name, fams.names())
			continue
		}
		if s.inRate && fam.typ != dto.MetricType_COUNTER {
			t.Errorf("rate() over %s, a %s", s.name, fam.typ)
		}
		for _, l := range s.labels {
			if !slices.Contains(fam.labels, l) {
				t.Errorf("%q matches label %q, which %s does not have (labels %v)", expr, l, s.name, fam.labels)
			}
		}
		exprLabels = append(exprLabels, fam.labels...)
	}

	// The annotations render with the labels the alert's series carry, and
	// name the pod (worker alerts) or the pool (condition alerts).
	labels := map[string]string{}
	for _, l := range slices.Concat(available, exprLabels) {
		labels[l] = "<" + l + ">"
	}
	for _, key := range []string{"summary", "description"} {
		text := r.Annotations[key]
		if strings.TrimSpace(text) == "" {
			t.Errorf("no %s annotation", key)
			continue
		}
		out, err := renderAlertTemplate(text, labels, 0.97)
		if err != nil {
			t.Errorf("%s annotation does not render with the series' labels %v: %v", key, slices.Sorted(maps.Keys(labels)), err)
			continue
		}
		if !strings.Contains(out, mustName) || !strings.Contains(out, "<namespace>") {
			t.Errorf("%s annotation %q does not name the namespace and %s", key, out, strings.Trim(mustName, "<>"))
		}
	}
}

// renderAlertTemplate expands an annotation as Prometheus does (with $labels
// and $value defined), failing on a label the alert does not carry.
func renderAlertTemplate(text string, labels map[string]string, value float64) (string, error) {
	const defs = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$value := .Value}}"
	stub := func(v any) string { return "value" }
	tmpl, err := template.New("annotation").Option("missingkey=error").Funcs(template.FuncMap{
		"humanize": stub, "humanizePercentage": stub, "humanizeDuration": stub, "humanize1024": stub,
	}).Parse(defs + text)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	err = tmpl.Execute(&b, struct {
		Labels, ExternalLabels map[string]string
		Value                  float64
	}{labels, map[string]string{}, value})
	return b.String(), err
}

// ---------------------------------------------------------------------------
// The metrics the project really serves

type family struct {
	typ    dto.MetricType
	labels []string
}

type families map[string]family

func (f families) has(name string) bool { _, ok := f[name]; return ok }
func (f families) names() []string      { return slices.Sorted(maps.Keys(f)) }

// workerMetrics assembles a real worker (FFI enabled, so every family is
// registered) and reads its /metrics endpoint. The worker never runs and its
// database pool never connects: assembling it touches no database.
func workerMetrics(t *testing.T) families {
	t.Helper()
	cfg := config.Default()
	cfg.Worker.WorkerID = "manifests-test"
	cfg.Worker.MPSCChannels.FFIDispatch.Enabled = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	w, err := worker.New(t.Context(), worker.Options{
		Config:      cfg,
		DatabaseURL: "postgres://manifests@127.0.0.1:1/manifests",
		Logger:      logr.Discard(),
		Listener:    ln,
		Version:     "test",
	})
	if err != nil {
		t.Fatalf("assemble worker: %v", err)
	}
	t.Cleanup(w.Queue().Pool().Close)

	rec := httptest.NewRecorder()
	w.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("worker /metrics: %d %s", rec.Code, rec.Body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parse worker /metrics: %v", err)
	}
	return toFamilies(slices.Collect(maps.Values(mfs)))
}

// operatorMetrics are the series controllers.NewPoolMetrics registers. Its
// vectors have no children until a pool is observed (which only the package
// itself can do), so the names and label names come from the collectors'
// descriptors: one sample is made for each descriptor and gathered.
func operatorMetrics(t *testing.T) families {
	t.Helper()
	reg := prometheus.NewRegistry()
	if _, err := controllers.NewPoolMetrics(reg); err != nil {
		t.Fatalf("NewPoolMetrics: %v", err)
	}
	descs := make(chan *prometheus.Desc)
	go func() { reg.Describe(descs); close(descs) }()
	var c sampleCollector
	for d := range descs {
		m, err := sampleFor(d)
		if err != nil {
			t.Fatalf("descriptor %s: %v", d, err)
		}
		c.descs, c.samples = append(c.descs, d), append(c.samples, m)
	}
	if len(c.descs) == 0 {
		t.Fatal("NewPoolMetrics registered no collectors")
	}
	out := prometheus.NewRegistry()
	if err := out.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := out.Gather()
	if err != nil {
		t.Fatal(err)
	}
	fams := toFamilies(mfs)
	if !fams.has("workerpool_status_condition") {
		t.Fatalf("operator metrics %v lack workerpool_status_condition", fams.names())
	}
	return fams
}

// sampleFor makes one untyped sample of a descriptor, finding its number of
// variable labels by trying (NewConstMetric refuses a wrong count).
func sampleFor(d *prometheus.Desc) (prometheus.Metric, error) {
	var err error
	for n := 0; n <= 16; n++ {
		values := make([]string, n)
		for i := range values {
			values[i] = "v"
		}
		var m prometheus.Metric
		if m, err = prometheus.NewConstMetric(d, prometheus.UntypedValue, 1, values...); err == nil {
			return m, nil
		}
	}
	return nil, err
}

type sampleCollector struct {
	descs   []*prometheus.Desc
	samples []prometheus.Metric
}

func (c sampleCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c sampleCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.samples {
		ch <- m
	}
}

func toFamilies(mfs []*dto.MetricFamily) families {
	out := families{}
	for _, mf := range mfs {
		f := family{typ: mf.GetType()}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if !slices.Contains(f.labels, lp.GetName()) {
					f.labels = append(f.labels, lp.GetName())
				}
			}
		}
		out[mf.GetName()] = f
	}
	return out
}

// selector is one metric read by a PromQL expression.
type selector struct {
	name   string
	labels []string // label names matched in {...}
	inRate bool     // the argument of rate/irate/increase
}

var promqlKeywords = []string{"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}

// selectors finds the metric names (and the label names they match) of the
// small PromQL expressions alert rules use: identifiers that are not function
// calls, keywords, numbers, durations or strings.
func selectors(t *testing.T, expr string) []selector {
	t.Helper()
	var out []selector
	var fn string // the function whose argument list we are in, if any
	isStart := func(c byte) bool { return c == '_' || c == ':' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
	isPart := func(c byte) bool { return isStart(c) || (c >= '0' && c <= '9') }
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'':
			end := strings.IndexByte(expr[i+1:], c)
			if end < 0 {
				t.Fatalf("unterminated string in %q", expr)
			}
			i += end + 2
		case c == '[': // range or subquery duration
			end := strings.IndexByte(expr[i:], ']')
			if end < 0 {
				t.Fatalf("unterminated range in %q", expr)
			}
			i += end + 1
		case c >= '0' && c <= '9' || c == '.': // number or duration
			for i < len(expr) && (isPart(expr[i]) || expr[i] == '.') {
				i++
			}
		case isStart(c):
			j := i
			for j < len(expr) && isPart(expr[j]) {
				j++
			}
			word := expr[i:j]
			k := j
			for k < len(expr) && expr[k] == ' ' {
				k++
			}
			switch {
			case k < len(expr) && expr[k] == '(':
				fn = word
			case slices.Contains(promqlKeywords, word):
			default:
				s := selector{name: word, inRate: fn == "rate" || fn == "irate" || fn == "increase"}
				if k < len(expr) && expr[k] == '{' {
					end := strings.IndexByte(expr[k:], '}')
					if end < 0 {
						t.Fatalf("unterminated selector in %q", expr)
					}
					s.labels = matcherLabels(t, expr[k+1:k+end])
					j = k + end + 1
				}
				out = append(out, s)
			}
			i = j
		case c == ')':
			fn = ""
			i++
		default:
			i++
		}
	}
	return out
}

// matcherLabels parses `a="x",b!~"y"` into [a b].
func matcherLabels(t *testing.T, matchers string) []string {
	t.Helper()
	var out []string
	for _, m := range strings.Split(matchers, ",") {
		m = strings.TrimSpace(m)
		if m == "" {
			continue
		}
		i := strings.IndexAny(m, "=!")
		if i <= 0 || !strings.Contains(m[i:], `"`) {
			t.Fatalf("cannot read label matcher %q", m)
		}
		out = append(out, strings.TrimSpace(m[:i]))
	}
	return out
}

// ---------------------------------------------------------------------------
// Prometheus operator objects (monitoring.coreos.com/v1), the fields used
// here; decoded strictly, so a misspelt field fails.

type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []rule `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

type rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			Any        bool     `json:"any"`
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port            string `json:"port"`
			Path            string `json:"path"`
			Scheme          string `json:"scheme"`
			BearerTokenFile string `json:"bearerTokenFile"`
			HonorLabels     bool   `json:"honorLabels"`
			TLSConfig       *struct {
				InsecureSkipVerify bool `json:"insecureSkipVerify"`
			} `json:"tlsConfig"`
			Relabelings []struct {
				SourceLabels []string `json:"sourceLabels"`
				TargetLabel  string   `json:"targetLabel"`
				Action       string   `json:"action"`
			} `json:"relabelings"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// relabelTargets maps each single source label of a monitor's relabelings
// (replace actions) to its target label.
func relabelTargets(m serviceMonitor) map[string]string {
	out := map[string]string{}
	for _, ep := range m.Spec.Endpoints {
		for _, r := range ep.Relabelings {
			if len(r.SourceLabels) == 1 && (r.Action == "" || r.Action == "replace") {
				out[r.SourceLabels[0]] = r.TargetLabel
			}
		}
	}
	return out
}

// serviceLabelMeta is the Kubernetes service discovery meta label of a
// Service label (invalid characters become underscores).
func serviceLabelMeta(label string) string {
	b := []byte(label)
	for i, c := range b {
		if !(c == '_' || (c >= '0' && c <= '9') || (c|0x20 >= 'a' && c|0x20 <= 'z')) {
			b[i] = '_'
		}
	}
	return "__meta_kubernetes_service_label_" + string(b)
}

// ---------------------------------------------------------------------------
// kustomize build and decoding

type object struct {
	kind, name, namespace string
	raw                   []byte
	typed                 runtime.Object // nil for kinds outside client-go's scheme
}

type objects []object

func (objs objects) get(t *testing.T, kind, name string) object {
	t.Helper()
	for _, o := range objs {
		if o.kind == kind && o.name == name {
			return o
		}
	}
	t.Fatalf("no %s %q among %v", kind, name, objs.names())
	return object{}
}

func (objs objects) names() []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.kind+"/"+o.name)
	}
	return out
}

// build runs the kustomize pinned in hack/tools/go.mod on dir and decodes
// every document: strictly into its client-go type where it has one.
func build(t *testing.T, dir string) objects {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	// go test puts its own toolchain's bin first in PATH, so this is the go
	// command running the test.
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to run the pinned kustomize: %v", err)
	}
	cmd := exec.CommandContext(ctx, gobin, "tool", "-modfile="+filepath.Join(repoRoot, "hack", "tools", "go.mod"), "kustomize", "build", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kustomize build %s: %v\n%s", dir, err, stderr.String())
	}
	codecs := serializer.NewCodecFactory(clientgoscheme.Scheme, serializer.EnableStrict)
	decoder := codecs.UniversalDeserializer()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	var objs objects
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read kustomize output: %v", err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var meta struct {
			metav1.TypeMeta   `json:",inline"`
			metav1.ObjectMeta `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("decode %s: %v", doc, err)
		}
		if meta.Kind == "" || meta.APIVersion == "" || meta.Name == "" {
			t.Fatalf("document without apiVersion, kind or name:\n%s", doc)
		}
		o := object{kind: meta.Kind, name: meta.Name, namespace: meta.Namespace, raw: doc}
		obj, _, err := decoder.Decode(doc, nil, nil)
		switch {
		case err == nil:
			o.typed = obj
		case runtime.IsNotRegisteredError(err):
			// CRD, PrometheusRule, ServiceMonitor: checked by their own decoders.
		default:
			t.Fatalf("%s %s does not decode strictly: %v", meta.Kind, meta.Name, err)
		}
		objs = append(objs, o)
	}
	return objs
}

// typed returns an object's client-go type, failing if it is not T.
func typed[T runtime.Object](t *testing.T, o object) T {
	t.Helper()
	v, ok := o.typed.(T)
	if !ok {
		t.Fatalf("%s %s decoded as %T", o.kind, o.name, o.typed)
	}
	return v
}

func decodeStrict(t *testing.T, o object, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(o.raw, into); err != nil {
		t.Fatalf("%s %s: %v", o.kind, o.name, err)
	}
}

func readStrict(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// labelSet is a set of Kubernetes labels, matched by selectors.
type labelSet = labels.Set

func namespaced(kind string) bool {
	switch kind {
	case "Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding":
		return false
	}
	return true
}

// allows says whether rules grant verb on resource in group.
func allows(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	for _, r := range rules {
		if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) &&
			(slices.Contains(r.Verbs, verb) || slices.Contains(r.Verbs, "*")) {
			return true
		}
	}
	return false
}

// flagPort is the port of a --flag=host:port argument.
func flagPort(t *testing.T, args []string, flag string) int {
	t.Helper()
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			_, port, err := net.SplitHostPort(v)
			if err != nil {
				t.Fatalf("%s: %v", a, err)
			}
			p, err := net.LookupPort("tcp", port)
			if err != nil {
				t.Fatalf("%s: %v", a, err)
			}
			return p
		}
	}
	t.Fatalf("no %s in %v", flag, args)
	return 0
}
