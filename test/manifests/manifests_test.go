// Package manifests proves the kustomize layout in config/: that
// config/default builds with the pinned kustomize into a complete, restricted
// install, that the Prometheus objects select what the operator and the
// workers really serve, and that the alert rules are the seed's and the
// conditions' (test/monitoring proves, with Prometheus's parser and
// promtool, that they read served metrics and fire when they should).
package manifests

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	workersv1alpha1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
	"github.com/seed-a17b38e7/workerpool-operator/test/kubeobjects"
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
		objs.Get(t, want.kind, want.name)
	}
	if len(objs) != 14 {
		t.Errorf("config/default renders %d objects, want 14: %v", len(objs), objs.Names())
	}

	for _, o := range objs {
		switch {
		case o.Kind == "Namespace" || o.Kind == "CustomResourceDefinition":
			// Not prefixed: the Namespace is named by `namespace:`, a CRD's
			// name is fixed by its group and plural.
		case !strings.HasPrefix(o.Name, namePrefix):
			t.Errorf("%s %q lacks the name prefix %q", o.Kind, o.Name, namePrefix)
		}
		if kubeobjects.Namespaced(o.Kind) && o.Namespace != namespace {
			t.Errorf("%s %s is in namespace %q, want %q", o.Kind, o.Name, o.Namespace, namespace)
		}
		if !kubeobjects.Namespaced(o.Kind) && o.Namespace != "" {
			t.Errorf("cluster-scoped %s %s has namespace %q", o.Kind, o.Name, o.Namespace)
		}
	}
	ns := kubeobjects.Typed[*corev1.Namespace](t, objs.Get(t, "Namespace", namespace))
	if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
		t.Errorf("namespace pod-security enforce label = %q, want restricted", got)
	}

	if n := kubeobjects.CheckBindings(t, objs, namespace); n != 3 {
		t.Errorf("found %d bindings, want 3 (manager, leader election, metrics auth)", n)
	}
	checkManagerBinding(t, objs)
	checkRoles(t, objs)
	checkDeployment(t, objs)
}

func checkManagerBinding(t *testing.T, objs kubeobjects.Objects) {
	t.Helper()
	crb := kubeobjects.Typed[*rbacv1.ClusterRoleBinding](t, objs.Get(t, "ClusterRoleBinding", namePrefix+"manager-rolebinding"))
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
	mr := kubeobjects.Typed[*rbacv1.ClusterRole](t, objs.Get(t, "ClusterRole", namePrefix+"manager-role"))
	if !allows(mr.Rules, workersv1alpha1.GroupVersion.Group, "workerpools", "watch") ||
		!allows(mr.Rules, workersv1alpha1.GroupVersion.Group, "workerpools/status", "patch") {
		t.Errorf("manager-role does not allow watching WorkerPools and patching their status: %+v", mr.Rules)
	}
}

func checkRoles(t *testing.T, objs kubeobjects.Objects) {
	t.Helper()
	le := kubeobjects.Typed[*rbacv1.Role](t, objs.Get(t, "Role", namePrefix+"leader-election-role"))
	for _, verb := range []string{"get", "create", "update"} {
		if !allows(le.Rules, "coordination.k8s.io", "leases", verb) {
			t.Errorf("leader-election-role does not allow %s on leases", verb)
		}
	}
	if !allows(le.Rules, "", "events", "create") {
		t.Error("leader-election-role does not allow creating events")
	}

	auth := kubeobjects.Typed[*rbacv1.ClusterRole](t, objs.Get(t, "ClusterRole", namePrefix+"metrics-auth-role"))
	if !allows(auth.Rules, "authentication.k8s.io", "tokenreviews", "create") ||
		!allows(auth.Rules, "authorization.k8s.io", "subjectaccessreviews", "create") {
		t.Errorf("metrics-auth-role must create tokenreviews and subjectaccessreviews: %+v", auth.Rules)
	}

	reader := kubeobjects.Typed[*rbacv1.ClusterRole](t, objs.Get(t, "ClusterRole", namePrefix+"metrics-reader"))
	want := []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}
	if len(reader.Rules) != 1 || !slices.Equal(reader.Rules[0].NonResourceURLs, want[0].NonResourceURLs) ||
		!slices.Equal(reader.Rules[0].Verbs, want[0].Verbs) {
		t.Errorf("metrics-reader rules = %+v, want %+v", reader.Rules, want)
	}

	group := workersv1alpha1.GroupVersion.Group
	editor := kubeobjects.Typed[*rbacv1.ClusterRole](t, objs.Get(t, "ClusterRole", namePrefix+"workerpool-editor-role"))
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
	viewer := kubeobjects.Typed[*rbacv1.ClusterRole](t, objs.Get(t, "ClusterRole", namePrefix+"workerpool-viewer-role"))
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

// checkDeployment: the manager Deployment passes kubeobjects.CheckManager
// and runs the image make deploy replaces, as the prefixed ServiceAccount,
// with runAsNonRoot and the RuntimeDefault seccomp profile set for the whole
// pod.
func checkDeployment(t *testing.T, objs kubeobjects.Objects) {
	t.Helper()
	d, c := kubeobjects.CheckManager(t, objs, namePrefix+"controller-manager", namePrefix+"controller-manager-metrics-service")
	pod := d.Spec.Template.Spec
	if pod.ServiceAccountName != namePrefix+"controller-manager" {
		t.Errorf("serviceAccountName = %q, want the prefixed controller-manager", pod.ServiceAccountName)
	}
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod securityContext.runAsNonRoot is not true")
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod seccompProfile is not RuntimeDefault")
	}
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

	rule := objs.Get(t, "PrometheusRule", namePrefix+"workerpool-alerts")
	opMon := objs.Get(t, "ServiceMonitor", namePrefix+"controller-manager-metrics-monitor")
	wMon := objs.Get(t, "ServiceMonitor", namePrefix+"worker-metrics-monitor")
	for _, o := range []kubeobjects.Object{rule, opMon, wMon} {
		if o.Namespace != namespace {
			t.Errorf("%s %s in namespace %q, want %q", o.Kind, o.Name, o.Namespace, namespace)
		}
	}
	if len(objs) != 17 {
		t.Errorf("config/default with ../prometheus renders %d objects, want 17: %v", len(objs), objs.Names())
	}

	// The operator's monitor scrapes the metrics Service's https port with a
	// bearer token, keeping the pools' namespace label.
	svc := kubeobjects.Typed[*corev1.Service](t, objs.Get(t, "Service", namePrefix+"controller-manager-metrics-service"))
	kubeobjects.CheckOperatorMonitor(t, kubeobjects.Typed[*kubeobjects.ServiceMonitor](t, opMon), svc)

	// The worker monitor finds the per-pool headless Services in any
	// namespace, on the port the operator names, and labels series with the pool.
	wm := kubeobjects.Typed[*kubeobjects.ServiceMonitor](t, wMon)
	kubeobjects.CheckWorkerMonitor(t, wm, svc)
	if wm.Spec.NamespaceSelector == nil || !wm.Spec.NamespaceSelector.Any {
		t.Error("worker ServiceMonitor must look in every namespace (pools live in their teams' namespaces)")
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
	"WorkerPoolStalled":            {workersv1alpha1.ConditionStalled, "True", 5 * time.Minute},
	"WorkerPoolNotReady":           {workersv1alpha1.ConditionReady, "False", 10 * time.Minute},
	"WorkerPoolMetricsUnavailable": {workersv1alpha1.ConditionMetricsAvailable, "False", 5 * time.Minute},
}

func TestAlertRules(t *testing.T) {
	var pr kubeobjects.PrometheusRule
	readStrict(t, filepath.Join(repoRoot, "config", "prometheus", "prometheusrule.yaml"), &pr)
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" {
		t.Fatalf("prometheusrule.yaml is %s %s", pr.APIVersion, pr.Kind)
	}
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
				checkAlert(t, r)
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

// checkAlert: the seed's alerts are the seed's rules as written, and each
// condition alert fires on its condition's status from the operator's
// gauge. That each reads what the project serves, and fires when it should,
// is test/monitoring's to prove (with Prometheus's parser and promtool).
func checkAlert(t *testing.T, r kubeobjects.Rule) {
	forDur, err := model.ParseDuration(r.For)
	if err != nil {
		t.Fatalf("for %q: %v", r.For, err)
	}
	expr := strings.Join(strings.Fields(r.Expr), " ")
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
		mustName = "pod"
	case conditionAlerts[r.Alert].condType != "":
		want := conditionAlerts[r.Alert]
		wantExpr := `workerpool_status_condition{type="` + want.condType + `",status="` + want.status + `"} == 1`
		if expr != wantExpr {
			t.Errorf("expr = %q, want %q (the gauge is 0 for a status the condition does not have)", expr, wantExpr)
		}
		if time.Duration(forDur) != want.for_ {
			t.Errorf("for %s, want %s", r.For, want.for_)
		}
		mustName = "workerpool"
	default:
		t.Fatalf("alert %s is neither a seed alert nor a condition alert; add it to this test", r.Alert)
	}
	if s := r.Labels["severity"]; s != "warning" && s != "critical" {
		t.Errorf("severity label %q, want warning or critical", s)
	}

	// The annotations name the namespace and the pod (worker alerts) or the
	// pool (condition alerts). test/monitoring checks that they render with
	// the labels the alert carries and, with promtool, the text itself.
	for _, key := range []string{"summary", "description"} {
		text := r.Annotations[key]
		if strings.TrimSpace(text) == "" {
			t.Errorf("no %s annotation", key)
			continue
		}
		if !strings.Contains(text, "$labels.namespace") || !strings.Contains(text, "$labels."+mustName) {
			t.Errorf("%s annotation %q does not name the namespace and the %s", key, text, mustName)
		}
	}
}

// ---------------------------------------------------------------------------
// kustomize build

// build runs the kustomize pinned in hack/tools/go.mod on dir and decodes
// every document strictly (kubeobjects.Decode).
func build(t *testing.T, dir string) kubeobjects.Objects {
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
	return kubeobjects.Decode(t, "kustomize", out)
}

// readStrict decodes a YAML file strictly into a struct.
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
