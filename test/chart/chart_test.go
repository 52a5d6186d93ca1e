// Package chart proves the Helm chart charts/workerpool-operator: that the
// helm pinned in hack/tools/go.mod lints it strictly and renders it, for a
// matrix of values, into objects that decode strictly into their Kubernetes
// types; that its RBAC fits each watch mode and binds only what it renders;
// that the manager accepts the flags it is given; that its CRD, roles and
// alert rules are config/'s; that its dashboard queries only real worker
// metrics; and that its values schema refuses typos and wrong types.
package chart

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	workersv1alpha1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
	"github.com/seed-a17b38e7/workerpool-operator/test/kubeobjects"
)

const (
	repoRoot  = "../.."
	release   = "wpo"
	namespace = "workerpool-operator-system"
	// The release name lacks the chart's name, so the chart appends it.
	fullname = release + "-workerpool-operator"
	keep     = "helm.sh/resource-policy"
)

var chartDir = filepath.Join(repoRoot, "charts", "workerpool-operator")

// ---------------------------------------------------------------------------
// helm lint

func TestLint(t *testing.T) {
	for _, tc := range []struct{ name, values string }{
		{"defaults", ""},
		{"everything on", everythingOn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir}
			if tc.values != "" {
				args = append(args, "--values", valuesFile(t, tc.values))
			}
			out, stderr, err := helm(t, args...)
			if err != nil {
				t.Fatalf("helm lint --strict: %v\n%s%s", err, out, stderr)
			}
			if !strings.Contains(out, "1 chart(s) linted, 0 chart(s) failed") || strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ERROR]") {
				t.Errorf("helm lint --strict output:\n%s", out)
			}
		})
	}
}

// everythingOn turns on every optional object at once.
const everythingOn = `
watchNamespaces: [shop, billing]
replicaCount: 2
monitoring:
  serviceMonitor: {enabled: true, labels: {release: kps}, interval: 30s}
  workerServiceMonitor: {enabled: true, labels: {release: kps}, scrapeTimeout: 5s}
  prometheusRule: {enabled: true, labels: {release: kps}}
  dashboard: {enabled: true, namespace: grafana, labels: {release: kps}, annotations: {grafana_folder: Tasker}}
networkPolicy:
  enabled: true
  prometheus:
    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
    podSelector: {matchLabels: {app.kubernetes.io/name: prometheus}}
`

// ---------------------------------------------------------------------------
// Defaults: cluster-wide

func TestDefaults(t *testing.T) {
	objs := render(t, "")
	want := []string{
		"ServiceAccount/" + fullname,
		"CustomResourceDefinition/workerpools.workers.tasker.dev",
		"ClusterRole/" + fullname + "-manager",
		"ClusterRoleBinding/" + fullname + "-manager",
		"Role/" + fullname + "-leader-election",
		"RoleBinding/" + fullname + "-leader-election",
		"ClusterRole/" + fullname + "-metrics-auth",
		"ClusterRoleBinding/" + fullname + "-metrics-auth",
		"ClusterRole/" + fullname + "-metrics-reader",
		"ClusterRole/" + fullname + "-workerpool-editor",
		"ClusterRole/" + fullname + "-workerpool-viewer",
		"Service/" + fullname + "-metrics",
		"Deployment/" + fullname,
	}
	checkNames(t, objs, want)
	checkCommon(t, objs)
	for _, o := range objs {
		if kubeobjects.Namespaced(o.Kind) && o.Namespace != namespace {
			t.Errorf("%s %s is in namespace %q, want the release namespace %q", o.Kind, o.Name, o.Namespace, namespace)
		}
	}

	if n := kubeobjects.CheckBindings(t, objs, namespace); n != 3 {
		t.Errorf("%d bindings, want 3 (manager, leader election, metrics auth)", n)
	}
	crb := kubeobjects.Typed[*rbacv1.ClusterRoleBinding](t, objs.Get(t, "ClusterRoleBinding", fullname+"-manager"))
	if crb.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: fullname + "-manager"}) {
		t.Errorf("manager ClusterRoleBinding roleRef = %+v", crb.RoleRef)
	}
	checkRoles(t, objs, nil)
	checkCRD(t, objs)

	d := checkDeployment(t, objs, 1, defaultArgs(nil))
	c := d.Spec.Template.Spec.Containers[0]
	if want := "workerpool-operator:" + appVersion(t); c.Image != want || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %q pull policy %q, want %q IfNotPresent (the chart's appVersion)", c.Image, c.ImagePullPolicy, want)
	}
	res := c.Resources
	if res.Requests.Cpu().String() != "50m" || res.Requests.Memory().String() != "64Mi" ||
		res.Limits.Cpu().String() != "500m" || res.Limits.Memory().String() != "256Mi" {
		t.Errorf("resources = %+v, want config/manager's 50m/64Mi requests, 500m/256Mi limits", res)
	}
	checkManagerAcceptsArgs(t, c.Args)
}

// ---------------------------------------------------------------------------
// watchNamespaces: a Role and RoleBinding per namespace, nothing cluster-wide
// for the pools

func TestWatchNamespaces(t *testing.T) {
	objs := render(t, "watchNamespaces: [a, b]\n")
	checkCommon(t, objs)
	for _, kind := range []string{"ClusterRole", "ClusterRoleBinding"} {
		if o, ok := objs.Find(kind, fullname+"-manager", ""); ok {
			t.Errorf("namespaced mode renders %s %s", kind, o.Name)
		}
	}
	var roleNamespaces, bindingNamespaces []string
	for _, o := range objs {
		switch {
		case o.Kind == "Role" && o.Name == fullname+"-manager":
			roleNamespaces = append(roleNamespaces, o.Namespace)
		case o.Kind == "RoleBinding" && o.Name == fullname+"-manager":
			bindingNamespaces = append(bindingNamespaces, o.Namespace)
			rb := kubeobjects.Typed[*rbacv1.RoleBinding](t, o)
			if rb.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: fullname + "-manager"}) {
				t.Errorf("RoleBinding %s/%s roleRef = %+v", o.Namespace, o.Name, rb.RoleRef)
			}
		}
	}
	slices.Sort(roleNamespaces)
	slices.Sort(bindingNamespaces)
	if !slices.Equal(roleNamespaces, []string{"a", "b"}) || !slices.Equal(bindingNamespaces, []string{"a", "b"}) {
		t.Errorf("manager Roles in %v and RoleBindings in %v, want one of each in a and b", roleNamespaces, bindingNamespaces)
	}
	// The leader election lease stays in the release namespace; the metrics
	// auth reviews are cluster-scoped in every mode.
	if o := objs.Get(t, "Role", fullname+"-leader-election"); o.Namespace != namespace {
		t.Errorf("leader election Role in %q, want %q", o.Namespace, namespace)
	}
	objs.Get(t, "ClusterRoleBinding", fullname+"-metrics-auth")
	if n := kubeobjects.CheckBindings(t, objs, namespace); n != 4 {
		t.Errorf("%d bindings, want 4 (manager in a and b, leader election, metrics auth)", n)
	}
	checkRoles(t, objs, []string{"a", "b"})
	for _, o := range objs {
		if kubeobjects.Namespaced(o.Kind) && o.Namespace != namespace && !(o.Name == fullname+"-manager" && (o.Namespace == "a" || o.Namespace == "b")) {
			t.Errorf("%s %s in namespace %q", o.Kind, o.Name, o.Namespace)
		}
	}

	d := checkDeployment(t, objs, 1, defaultArgs([]string{"a", "b"}))
	var watch []string
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		if strings.HasPrefix(a, "--watch-namespaces") {
			watch = append(watch, a)
		}
	}
	if !slices.Equal(watch, []string{"--watch-namespaces=a,b"}) {
		t.Errorf("watch flags %v, want exactly --watch-namespaces=a,b", watch)
	}
	checkManagerAcceptsArgs(t, d.Spec.Template.Spec.Containers[0].Args)
}

// ---------------------------------------------------------------------------
// crds.install=false

func TestCRDsNotInstalled(t *testing.T) {
	objs := render(t, "crds:\n  install: false\n")
	checkCommon(t, objs)
	if _, ok := objs.Find("CustomResourceDefinition", "workerpools.workers.tasker.dev", ""); ok {
		t.Error("crds.install=false still renders the CRD")
	}
	if got, want := len(objs), len(render(t, ""))-1; got != want {
		t.Errorf("%d objects, want %d (the defaults less the CRD): %v", got, want, objs.Names())
	}
	checkDeployment(t, objs, 1, defaultArgs(nil))
}

// ---------------------------------------------------------------------------
// Replicas and leader election

func TestReplicas(t *testing.T) {
	objs := render(t, "replicaCount: 2\n")
	checkCommon(t, objs)
	checkDeployment(t, objs, 2, defaultArgs(nil))
	objs.Get(t, "Role", fullname+"-leader-election")
	objs.Get(t, "RoleBinding", fullname+"-leader-election")

	// One replica without leader election: no flag, no lease Role.
	objs = render(t, "leaderElection:\n  enabled: false\n")
	checkCommon(t, objs)
	args := slices.DeleteFunc(defaultArgs(nil), func(a string) bool { return strings.HasPrefix(a, "--leader-elect") })
	checkDeployment(t, objs, 1, args)
	for _, kind := range []string{"Role", "RoleBinding"} {
		if _, ok := objs.Find(kind, fullname+"-leader-election", namespace); ok {
			t.Errorf("leader election off still renders the %s", kind)
		}
	}

	// Several replicas without leader election would all reconcile.
	err := renderError(t, "replicaCount: 3\nleaderElection:\n  enabled: false\n")
	if !strings.Contains(err, "replicaCount 3 needs leaderElection.enabled") {
		t.Errorf("replicas without leader election: %s", err)
	}
}

// ---------------------------------------------------------------------------
// Every other value lands where it should, and the manager accepts the flags

func TestCustomValues(t *testing.T) {
	objs := render(t, `
fullnameOverride: ops
image: {repository: registry.local/wpo, tag: v9.9.9, pullPolicy: Never}
imagePullSecrets: [{name: regcred}]
readQueues: false
manager:
  statusInterval: 30s
  autoscaleInterval: 5s
  scrapeTimeout: 1500ms
  scrapeConcurrency: 1000000
  maxConcurrentReconciles: 8
  kubeAPIQPS: 2.5
  kubeAPIBurst: 10
  logLevel: 3
  logEncoder: console
  extraArgs: [--enable-http2]
serviceAccount: {create: true, name: operator, annotations: {team: ops}}
rbac: {aggregateToDefaultRoles: false}
resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {cpu: 1, memory: 1Gi}}
podAnnotations: {example.com/a: "1"}
podLabels: {team: ops}
priorityClassName: system-cluster-critical
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: ops, effect: NoSchedule}]
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/arch, operator: In, values: [amd64]}]}]
    preferredDuringSchedulingIgnoredDuringExecution: [{weight: 10, preference: {matchFields: [{key: metadata.name, operator: NotIn, values: [n1]}]}}]
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app.kubernetes.io/name: workerpool-operator}}, matchLabelKeys: [pod-template-hash]}
`)
	checkCommon(t, objs)
	for _, role := range []string{"workerpool-editor", "workerpool-viewer"} {
		if _, ok := objs.Find("ClusterRole", "ops-"+role, ""); ok {
			t.Errorf("rbac.aggregateToDefaultRoles=false still renders %s", role)
		}
	}
	sa := kubeobjects.Typed[*corev1.ServiceAccount](t, objs.Get(t, "ServiceAccount", "operator"))
	if sa.Annotations["team"] != "ops" {
		t.Errorf("ServiceAccount annotations = %v", sa.Annotations)
	}
	kubeobjects.CheckBindings(t, objs, namespace)

	d := kubeobjects.Typed[*appsv1.Deployment](t, objs.Get(t, "Deployment", "ops"))
	pod := d.Spec.Template
	c := pod.Spec.Containers[0]
	if c.Image != "registry.local/wpo:v9.9.9" || c.ImagePullPolicy != corev1.PullNever {
		t.Errorf("image %q %q", c.Image, c.ImagePullPolicy)
	}
	wantArgs := []string{
		"--health-probe-bind-address=:8081", "--metrics-bind-address=:8443",
		"--leader-elect", "--leader-election-namespace=" + namespace, "--read-queues=false",
		"--status-interval=30s", "--autoscale-interval=5s", "--scrape-timeout=1500ms", "--scrape-concurrency=1000000", "--max-concurrent-reconciles=8",
		"--kube-api-qps=2.5", "--kube-api-burst=10", "--zap-log-level=3", "--zap-encoder=console", "--enable-http2",
	}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args = %q\nwant %q", c.Args, wantArgs)
	}
	// Without queue reading, the operator may not read Secrets at all.
	for _, r := range kubeobjects.Typed[*rbacv1.ClusterRole](t, objs.Get(t, "ClusterRole", "ops-manager")).Rules {
		if slices.Contains(r.Resources, "secrets") {
			t.Errorf("readQueues=false still grants %v on secrets", r.Verbs)
		}
	}
	checkManagerAcceptsArgs(t, c.Args)
	if pod.Spec.ServiceAccountName != "operator" || !slices.Equal(pod.Spec.ImagePullSecrets, []corev1.LocalObjectReference{{Name: "regcred"}}) {
		t.Errorf("serviceAccountName %q imagePullSecrets %v", pod.Spec.ServiceAccountName, pod.Spec.ImagePullSecrets)
	}
	if pod.Annotations["example.com/a"] != "1" || pod.Labels["team"] != "ops" || pod.Spec.PriorityClassName != "system-cluster-critical" ||
		pod.Spec.NodeSelector["kubernetes.io/os"] != "linux" || len(pod.Spec.Tolerations) != 1 || pod.Spec.Tolerations[0].Key != "dedicated" {
		t.Errorf("pod metadata or scheduling values did not land: %+v %+v", pod.ObjectMeta, pod.Spec)
	}
	a := pod.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.PodAntiAffinity == nil ||
		a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" {
		t.Errorf("affinity = %+v", a)
	}
	if c.Resources.Limits.Memory().String() != "1Gi" || c.Resources.Requests.Cpu().String() != "100m" {
		t.Errorf("resources = %+v", c.Resources)
	}
	if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil || !sel.Matches(labels.Set(pod.Labels)) {
		t.Errorf("selector %v does not match the pod labels %v", d.Spec.Selector, pod.Labels)
	}

	// serviceAccount.create=false needs the name of an existing one.
	if err := renderError(t, "serviceAccount: {create: false}\n"); !strings.Contains(err, "serviceAccount.name") {
		t.Errorf("serviceAccount.create=false without a name: %s", err)
	}
	objs = render(t, "serviceAccount: {create: false, name: existing}\n")
	if _, ok := objs.Find("ServiceAccount", "existing", namespace); ok {
		t.Error("serviceAccount.create=false renders the ServiceAccount")
	}
	for _, o := range objs {
		var subjects []rbacv1.Subject
		switch b := o.Decoded.(type) {
		case *rbacv1.ClusterRoleBinding:
			subjects = b.Subjects
		case *rbacv1.RoleBinding:
			subjects = b.Subjects
		}
		for _, s := range subjects {
			if s.Name != "existing" || s.Namespace != namespace {
				t.Errorf("%s %s binds %s/%s, want the existing ServiceAccount", o.Kind, o.Name, s.Namespace, s.Name)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Monitoring: ServiceMonitors, PrometheusRule, dashboard

func TestMonitoring(t *testing.T) {
	objs := render(t, `
monitoring:
  serviceMonitor: {enabled: true, labels: {release: kps}}
  workerServiceMonitor: {enabled: true, labels: {release: kps}, interval: 30s}
  prometheusRule: {enabled: true, labels: {release: kps}}
  dashboard: {enabled: true, labels: {release: kps}}
`)
	checkCommon(t, objs)
	opMon := objs.Get(t, "ServiceMonitor", fullname+"-metrics")
	wMon := objs.Get(t, "ServiceMonitor", fullname+"-workers")
	rule := objs.Get(t, "PrometheusRule", fullname+"-alerts")
	dash := objs.Get(t, "ConfigMap", fullname+"-dashboard")
	for _, o := range []kubeobjects.Object{opMon, wMon, rule, dash} {
		if o.Namespace != namespace {
			t.Errorf("%s %s in namespace %q, want %q", o.Kind, o.Name, o.Namespace, namespace)
		}
		var meta metav1.PartialObjectMetadata
		if err := yaml.Unmarshal(o.Raw, &meta); err != nil {
			t.Fatal(err)
		}
		if meta.Labels["release"] != "kps" {
			t.Errorf("%s %s lacks the label release=kps from values: %v", o.Kind, o.Name, meta.Labels)
		}
	}
	if defaults := len(render(t, "")); len(objs) != defaults+4 {
		t.Errorf("monitoring adds %d objects, want 4: %v", len(objs)-defaults, objs.Names())
	}

	// The operator's monitor scrapes the metrics Service's https port with a
	// bearer token, keeping the pools' namespace label.
	svc := kubeobjects.Typed[*corev1.Service](t, objs.Get(t, "Service", fullname+"-metrics"))
	kubeobjects.CheckOperatorMonitor(t, kubeobjects.Typed[*kubeobjects.ServiceMonitor](t, opMon), svc)

	// The worker monitor finds the operator's per-pool headless Services (in
	// every namespace here) on the port the operator names, and not the
	// operator's own Service.
	wm := wMon.Decoded.(*kubeobjects.ServiceMonitor)
	kubeobjects.CheckWorkerMonitor(t, wm, svc)
	if wm.Spec.NamespaceSelector == nil || !wm.Spec.NamespaceSelector.Any || len(wm.Spec.NamespaceSelector.MatchNames) > 0 {
		t.Errorf("cluster-wide worker ServiceMonitor namespaceSelector = %+v, want any", wm.Spec.NamespaceSelector)
	}
	if wm.Spec.Endpoints[0].Interval != "30s" {
		t.Errorf("worker endpoint interval %q, want 30s from values", wm.Spec.Endpoints[0].Interval)
	}

	checkPrometheusRule(t, rule)
	checkDashboard(t, dash)

	// Watching namespaces, the worker monitor looks only there.
	objs = render(t, "watchNamespaces: [a, b]\nmonitoring:\n  workerServiceMonitor: {enabled: true}\n")
	wm = objs.Get(t, "ServiceMonitor", fullname+"-workers").Decoded.(*kubeobjects.ServiceMonitor)
	if wm.Spec.NamespaceSelector == nil || wm.Spec.NamespaceSelector.Any || !slices.Equal(wm.Spec.NamespaceSelector.MatchNames, []string{"a", "b"}) {
		t.Errorf("namespaced worker ServiceMonitor namespaceSelector = %+v, want matchNames [a b]", wm.Spec.NamespaceSelector)
	}

	// The dashboard can live where Grafana's sidecar looks.
	objs = render(t, "monitoring:\n  dashboard: {enabled: true, namespace: grafana}\n")
	if o := objs.Get(t, "ConfigMap", fullname+"-dashboard"); o.Namespace != "grafana" {
		t.Errorf("dashboard in %q, want grafana", o.Namespace)
	}
}

// checkPrometheusRule: the rendered rules are config/prometheus's, unchanged.
func checkPrometheusRule(t *testing.T, rule kubeobjects.Object) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot, "config", "prometheus", "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want, got map[string]any
	if err := yaml.Unmarshal(src, &want); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(rule.Raw, &got); err != nil {
		t.Fatal(err)
	}
	if got["apiVersion"] != want["apiVersion"] || got["kind"] != want["kind"] {
		t.Errorf("PrometheusRule is %v %v, config/prometheus's is %v %v", got["apiVersion"], got["kind"], want["apiVersion"], want["kind"])
	}
	if !reflect.DeepEqual(got["spec"], want["spec"]) {
		g, _ := yaml.Marshal(got["spec"])
		w, _ := yaml.Marshal(want["spec"])
		t.Errorf("the chart's alert rules differ from config/prometheus/prometheusrule.yaml (run make chart-generate):\n--- chart\n%s\n--- config\n%s", g, w)
	}
	pr := rule.Decoded.(*kubeobjects.PrometheusRule)
	var alerts []string
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
		}
	}
	// The seed's five and the five condition alerts (test/manifests checks
	// their expressions, test/monitoring the metrics they read and, with
	// promtool, when each fires).
	for _, a := range []string{"FFIPendingEventsHigh", "FFIOldestEventAging", "CompletionChannelSaturated", "CompletionChannelCritical",
		"CallbackTimeoutsHigh", "WorkerPoolStarving", "WorkerPoolBackpressure", "WorkerPoolStalled", "WorkerPoolNotReady", "WorkerPoolMetricsUnavailable"} {
		if !slices.Contains(alerts, a) {
			t.Errorf("alert %s missing from the chart's PrometheusRule (%v)", a, alerts)
		}
	}
}

// ---------------------------------------------------------------------------
// The Grafana dashboard

// dashboardFile is the dashboard the chart ships. test/monitoring parses
// every query of it with Prometheus's parser and checks each against the
// series the worker serves; here the chart must ship that file unchanged.
var dashboardFile = filepath.Join(chartDir, "files", "dashboards", "workerpool-workers.json")

type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Title      string `json:"title"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// checkDashboard: the ConfigMap is one Grafana's sidecar loads, holding the
// chart's dashboard file as it is, whose panels all query through the
// dashboard's datasource variable (so it works with any Prometheus).
func checkDashboard(t *testing.T, o kubeobjects.Object) {
	t.Helper()
	cm := kubeobjects.Typed[*corev1.ConfigMap](t, o)
	if cm.Labels["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap labels %v, want grafana_dashboard: \"1\" for Grafana's sidecar", cm.Labels)
	}
	if len(cm.Data) != 1 {
		t.Fatalf("dashboard ConfigMap has %d keys, want one JSON file", len(cm.Data))
	}
	var raw string
	for k, v := range cm.Data {
		if !strings.HasSuffix(k, ".json") {
			t.Errorf("dashboard key %q does not end in .json", k)
		}
		raw = v
	}
	file, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(raw) != strings.TrimSpace(string(file)) {
		t.Errorf("the dashboard ConfigMap does not hold %s as it is", dashboardFile)
	}
	var d dashboard
	if err := json.Unmarshal([]byte(raw), &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard uid %q title %q with %d panels", d.UID, d.Title, len(d.Panels))
	}
	var datasourceVariable bool
	for _, v := range d.Templating.List {
		datasourceVariable = datasourceVariable || v.Name == "datasource"
	}
	if !datasourceVariable {
		t.Error("the dashboard has no datasource variable; its panels name ${datasource}")
	}
	for _, p := range d.Panels {
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q uses datasource %q, want ${datasource}", p.Title, p.Datasource.UID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q has an empty query", p.Title)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// NetworkPolicy

func TestNetworkPolicy(t *testing.T) {
	objs := render(t, `
watchNamespaces: [a, b]
networkPolicy:
  enabled: true
  prometheus:
    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
    podSelector: {matchLabels: {app.kubernetes.io/name: prometheus}}
`)
	checkCommon(t, objs)
	d := kubeobjects.Typed[*appsv1.Deployment](t, objs.Get(t, "Deployment", fullname))
	operatorPod := labels.Set(d.Spec.Template.Labels)
	releaseNS := labels.Set{"kubernetes.io/metadata.name": namespace}
	promNS := labels.Set{"kubernetes.io/metadata.name": "monitoring"}
	promPod := labels.Set{"app.kubernetes.io/name": "prometheus"}
	workerPod := labels.Set{"app.kubernetes.io/managed-by": "workerpool-operator", "app.kubernetes.io/name": "tasker-worker",
		workersv1alpha1.PoolLabel: "payments"}

	var policyNamespaces []string
	for _, o := range objs {
		if o.Kind != "NetworkPolicy" {
			continue
		}
		policyNamespaces = append(policyNamespaces, o.Namespace)
		np := kubeobjects.Typed[*networkingv1.NetworkPolicy](t, o)
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || !sel.Matches(workerPod) || np.Spec.PodSelector.MatchLabels["app.kubernetes.io/managed-by"] != "workerpool-operator" {
			t.Errorf("policy %s/%s podSelector %+v does not select the worker pods by managed-by (%v)", o.Namespace, o.Name, np.Spec.PodSelector, err)
		}
		if sel.Matches(operatorPod) {
			t.Errorf("policy %s/%s also selects the operator's pods", o.Namespace, o.Name)
		}
		if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) || len(np.Spec.Egress) > 0 {
			t.Errorf("policy %s/%s policyTypes %v egress %v, want ingress only", o.Namespace, o.Name, np.Spec.PolicyTypes, np.Spec.Egress)
		}
		if len(np.Spec.Ingress) != 1 {
			t.Fatalf("policy %s/%s has %d ingress rules, want 1", o.Namespace, o.Name, len(np.Spec.Ingress))
		}
		rule := np.Spec.Ingress[0]
		if len(rule.Ports) != 1 || rule.Ports[0].Port == nil || rule.Ports[0].Port.IntValue() != 9090 ||
			rule.Ports[0].Protocol == nil || *rule.Ports[0].Protocol != corev1.ProtocolTCP || rule.Ports[0].EndPort != nil {
			t.Errorf("policy %s/%s ports %s, want TCP 9090 only", o.Namespace, o.Name, rule.String())
		}
		// Who gets in: the operator's pods in the release namespace and the
		// Prometheus pods in its namespace; nobody else.
		// As NetworkPolicy peers match: no namespaceSelector means the
		// policy's own namespace, no podSelector every pod.
		admits := func(ns, pod labels.Set) bool {
			for _, peer := range rule.From {
				if peer.IPBlock != nil {
					continue
				}
				nsOK := ns["kubernetes.io/metadata.name"] == o.Namespace
				if peer.NamespaceSelector != nil {
					sel, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
					nsOK = err == nil && sel.Matches(ns)
				}
				podOK := true
				if peer.PodSelector != nil {
					sel, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
					podOK = err == nil && sel.Matches(pod)
				}
				if nsOK && podOK {
					return true
				}
			}
			return false
		}
		for _, peer := range rule.From {
			if peer.IPBlock != nil || peer.NamespaceSelector == nil || len(peer.NamespaceSelector.MatchLabels)+len(peer.NamespaceSelector.MatchExpressions) == 0 {
				t.Errorf("policy %s/%s has a peer open to every namespace or an IP block: %+v", o.Namespace, o.Name, peer)
			}
		}
		for _, c := range []struct {
			what    string
			ns, pod labels.Set
			want    bool
		}{
			{"the operator", releaseNS, operatorPod, true},
			{"Prometheus", promNS, promPod, true},
			{"another pod in the operator's namespace", releaseNS, labels.Set{"app": "x"}, false},
			{"the operator's labels in another namespace", labels.Set{"kubernetes.io/metadata.name": "a"}, operatorPod, false},
			{"another pod in Prometheus's namespace", promNS, labels.Set{"app": "grafana"}, false},
			{"a worker of the same namespace", labels.Set{"kubernetes.io/metadata.name": o.Namespace}, workerPod, false},
		} {
			if got := admits(c.ns, c.pod); got != c.want {
				t.Errorf("policy %s/%s admits %s: %v, want %v", o.Namespace, o.Name, c.what, got, c.want)
			}
		}
	}
	slices.Sort(policyNamespaces)
	if !slices.Equal(policyNamespaces, []string{"a", "b"}) {
		t.Errorf("NetworkPolicies in %v, want one in each watched namespace [a b]", policyNamespaces)
	}

	// Without a Prometheus selector only the operator gets in; cluster-wide,
	// the policy goes to the namespaces listed for it.
	objs = render(t, "networkPolicy:\n  enabled: true\n  namespaces: [shop]\n")
	np := kubeobjects.Typed[*networkingv1.NetworkPolicy](t, objs.Get(t, "NetworkPolicy", fullname+"-workers"))
	if np.Namespace != "shop" || len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 1 {
		t.Errorf("policy %s: ingress %+v, want only the operator's peer, in shop", np.Namespace, np.Spec.Ingress)
	}
	// Cluster-wide with no namespace for the policy is an error, not a
	// policy that silently covers nothing.
	if err := renderError(t, "networkPolicy:\n  enabled: true\n"); !strings.Contains(err, "networkPolicy.namespaces") {
		t.Errorf("networkPolicy without namespaces: %s", err)
	}
	if _, ok := render(t, "").Find("NetworkPolicy", fullname+"-workers", ""); ok {
		t.Error("the NetworkPolicy is rendered by default")
	}
}

// ---------------------------------------------------------------------------
// values.schema.json

func TestSchemaRejects(t *testing.T) {
	for _, tc := range []struct {
		name, values string
		want         []string // in the error
	}{
		{"typo at the top", "replicaCont: 2\n", []string{"additional properties 'replicaCont' not allowed"}},
		{"typo nested", "manager:\n  statusIntervl: 30s\n", []string{"at '/manager'", "'statusIntervl'"}},
		{"typo deep", "monitoring:\n  dashboard:\n    enable: true\n", []string{"at '/monitoring/dashboard'", "'enable'"}},
		{"typo in affinity", "affinity:\n  nodeAfinity: {}\n", []string{"at '/affinity'", "'nodeAfinity'"}},
		{"wrong type", "replicaCount: \"two\"\n", []string{"at '/replicaCount'", "want integer"}},
		{"wrong type nested", "watchNamespaces: shop\n", []string{"at '/watchNamespaces'", "want array"}},
		{"zero replicas", "replicaCount: 0\n", []string{"at '/replicaCount'", "minimum"}},
		{"bad enum", "image:\n  pullPolicy: Sometimes\n", []string{"at '/image/pullPolicy'", "IfNotPresent"}},
		{"bad duration", "manager:\n  statusInterval: 15\n", []string{"at '/manager/statusInterval'"}},
		{"bad namespace", "watchNamespaces: [Shop]\n", []string{"at '/watchNamespaces/0'"}},
		{"bad log level", "manager:\n  logLevel: verbose\n", []string{"at '/manager/logLevel'"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := helm(t, "template", release, chartDir, "--namespace", namespace, "--values", valuesFile(t, tc.values))
			if err == nil {
				t.Fatalf("helm template accepted %q", tc.values)
			}
			if strings.TrimSpace(out) != "" {
				t.Errorf("helm template printed manifests although it failed:\n%s", out)
			}
			if !strings.Contains(stderr, "values don't meet the specifications of the schema") {
				t.Errorf("not a schema error: %s", stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("error does not say %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestSchemaStrict: every object in values.schema.json refuses unknown keys,
// except string maps (labels, annotations, selectors, resource lists), whose
// values are still typed.
func TestSchemaStrict(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	if schema["$schema"] != "http://json-schema.org/draft-07/schema#" {
		t.Errorf("$schema = %v, want draft-07", schema["$schema"])
	}
	defs, _ := schema["definitions"].(map[string]any)
	var objects int
	var walk func(path string, node any)
	walk = func(path string, node any) {
		s, ok := node.(map[string]any)
		if !ok {
			t.Errorf("%s: schema %v is not an object", path, node)
			return
		}
		if _, ok := s["properties"]; ok || s["type"] == "object" {
			objects++
			switch ap := s["additionalProperties"].(type) {
			case bool:
				if ap {
					t.Errorf("%s: additionalProperties true", path)
				}
			case map[string]any:
				if leafType(ap, defs) == "object" || leafType(ap, defs) == "" {
					t.Errorf("%s: a map whose values are not typed scalars: %v", path, ap)
				}
				if _, ok := s["properties"]; ok {
					t.Errorf("%s: both properties and a map of additional ones", path)
				}
			default:
				t.Errorf("%s: an object without additionalProperties false", path)
			}
		}
		for _, key := range []string{"properties", "definitions"} {
			if m, ok := s[key].(map[string]any); ok {
				for k, v := range m {
					walk(path+"/"+k, v)
				}
			}
		}
		for _, key := range []string{"items", "additionalProperties"} {
			if v, ok := s[key].(map[string]any); ok {
				walk(path+"/"+key, v)
			}
		}
		for _, key := range []string{"oneOf", "anyOf", "allOf"} {
			if l, ok := s[key].([]any); ok {
				for i, v := range l {
					walk(fmt.Sprintf("%s/%s/%d", path, key, i), v)
				}
			}
		}
	}
	walk("#", schema)
	if objects < 20 {
		t.Errorf("walked only %d object schemas", objects)
	}

	// Every value in values.yaml is described in the schema (helm validates
	// the defaults too, which TestDefaults renders, but say which key).
	vb, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(vb, &values); err != nil {
		t.Fatal(err)
	}
	var check func(path string, v map[string]any, s map[string]any)
	check = func(path string, v map[string]any, s map[string]any) {
		s = resolve(s, defs)
		props, _ := s["properties"].(map[string]any)
		for k, val := range v {
			ps, ok := props[k].(map[string]any)
			if !ok {
				if _, isMap := s["additionalProperties"].(map[string]any); !isMap {
					t.Errorf("values.yaml %s.%s is not in the schema", path, k)
				}
				continue
			}
			if m, ok := val.(map[string]any); ok {
				check(path+"."+k, m, ps)
			}
		}
	}
	check("", values, schema)
}

// resolve follows a local $ref.
func resolve(s map[string]any, defs map[string]any) map[string]any {
	for {
		ref, ok := s["$ref"].(string)
		if !ok {
			return s
		}
		next, ok := defs[strings.TrimPrefix(ref, "#/definitions/")].(map[string]any)
		if !ok {
			return s
		}
		s = next
	}
}

// leafType is the type a schema allows ("" if it cannot tell, "object" if
// any branch allows objects).
func leafType(s map[string]any, defs map[string]any) string {
	s = resolve(s, defs)
	if t, ok := s["type"].(string); ok {
		return t
	}
	for _, key := range []string{"oneOf", "anyOf"} {
		if l, ok := s[key].([]any); ok {
			out := ""
			for _, v := range l {
				m, _ := v.(map[string]any)
				switch t := leafType(m, defs); t {
				case "", "object":
					return t
				default:
					out = t
				}
			}
			return out
		}
	}
	return ""
}

// ---------------------------------------------------------------------------
// NOTES.txt

func TestNotes(t *testing.T) {
	notes := renderNotes(t, "watchNamespaces: [shop]\n")
	for _, want := range []string{
		"kubectl -n " + namespace + " rollout status deployment/" + fullname,
		"kubectl -n shop create secret generic tasker-db",
		"kubectl -n shop apply -f - <<'EOF'",
		"kubectl -n shop get wp -w",
		"kubectl -n shop describe wp minimal",
		"watching the namespaces shop",
		"helm.sh/resource-policy: keep",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES do not say %q:\n%s", want, notes)
		}
	}
	// The sample pool in the NOTES is a valid WorkerPool, pasteable as a
	// heredoc: its terminator stands alone at the start of a line.
	_, after, ok := strings.Cut(notes, "apply -f - <<'EOF'\n")
	body, _, ok2 := strings.Cut(after, "\nEOF\n")
	if !ok || !ok2 {
		t.Fatalf("no heredoc ending in a bare EOF line in the NOTES:\n%s", notes)
	}
	var wp workersv1alpha1.WorkerPool
	if err := yaml.UnmarshalStrict([]byte(body), &wp); err != nil {
		t.Fatalf("the NOTES' sample pool does not decode strictly: %v\n%s", err, body)
	}
	if wp.APIVersion != workersv1alpha1.GroupVersion.String() || wp.Kind != "WorkerPool" || wp.Name != "minimal" ||
		wp.Spec.Image == "" || wp.Spec.Queue.DatabaseSecretRef.Name != "tasker-db" {
		t.Errorf("the NOTES' sample pool = %+v", wp)
	}

	notes = renderNotes(t, "crds:\n  install: false\n")
	for _, want := range []string{"watching every namespace", "crds.install is false", "kubectl -n default get wp -w"} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES with defaults and crds.install=false do not say %q:\n%s", want, notes)
		}
	}
	if strings.Contains(notes, "resource-policy") {
		t.Error("NOTES talk about the CRD's keep policy although the chart does not install the CRD")
	}
}

// renderNotes renders templates/NOTES.txt. helm template leaves NOTES out
// (and install --dry-run needs a cluster), so a copy of the chart gets a
// ConfigMap that renders the NOTES with tpl, in the chart's own context.
func renderNotes(t *testing.T, values string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "workerpool-operator")
	if err := os.CopyFS(dir, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	notes, err := os.ReadFile(filepath.Join(chartDir, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "files", "notes-under-test.txt"), notes, 0o644); err != nil {
		t.Fatal(err)
	}
	const cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-under-test\ndata:\n" +
		"  notes: {{ tpl (.Files.Get \"files/notes-under-test.txt\") . | toJson }}\n"
	if err := os.WriteFile(filepath.Join(dir, "templates", "notes-under-test.yaml"), []byte(cm), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := helm(t, "template", release, dir, "--namespace", namespace, "--show-only", "templates/notes-under-test.yaml",
		"--values", valuesFile(t, values))
	if err != nil {
		t.Fatalf("render NOTES: %v\n%s", err, stderr)
	}
	var c corev1.ConfigMap
	if err := yaml.UnmarshalStrict([]byte(out), &c); err != nil {
		t.Fatalf("rendered NOTES: %v\n%s", err, out)
	}
	if c.Data["notes"] == "" {
		t.Fatal("NOTES render empty")
	}
	return c.Data["notes"]
}

// ---------------------------------------------------------------------------
// Shared checks

func checkNames(t *testing.T, objs kubeobjects.Objects, want []string) {
	t.Helper()
	got := objs.Names()
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("rendered objects:\n  %v\nwant:\n  %v", got, want)
	}
}

// checkCommon holds for every render: cluster-scoped objects have no
// namespace and namespaced ones name theirs; every object but the CRD is
// named after the release and carries the chart's labels; no two collide.
func checkCommon(t *testing.T, objs kubeobjects.Objects) {
	t.Helper()
	seen := map[string]bool{}
	for _, o := range objs {
		key := o.Kind + "/" + o.Namespace + "/" + o.Name
		if seen[key] {
			t.Errorf("%s rendered twice", key)
		}
		seen[key] = true
		if kubeobjects.Namespaced(o.Kind) && o.Namespace == "" {
			t.Errorf("%s %s has no namespace", o.Kind, o.Name)
		}
		if !kubeobjects.Namespaced(o.Kind) && o.Namespace != "" {
			t.Errorf("cluster-scoped %s %s has namespace %q", o.Kind, o.Name, o.Namespace)
		}
		if o.Kind == "CustomResourceDefinition" {
			continue // kept exactly as config/crd/bases has it
		}
		var meta metav1.PartialObjectMetadata
		if err := yaml.Unmarshal(o.Raw, &meta); err != nil {
			t.Fatal(err)
		}
		for k, v := range map[string]string{
			"app.kubernetes.io/name": "workerpool-operator", "app.kubernetes.io/instance": release,
			"app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": "workerpool-operator-" + chartVersion(t),
		} {
			if meta.Labels[k] != v {
				t.Errorf("%s %s: label %s=%q, want %q", o.Kind, o.Name, k, meta.Labels[k], v)
			}
		}
	}
}

// checkRoles: each role's rules are those of its counterpart in config/rbac
// (role.yaml is generated by controller-gen from the controllers' markers).
func checkRoles(t *testing.T, objs kubeobjects.Objects, watchNamespaces []string) {
	t.Helper()
	compare := func(o kubeobjects.Object, rules []rbacv1.PolicyRule, file string) {
		want := configRole(t, file)
		if !apiequality.Semantic.DeepEqual(rules, want.Rules) {
			t.Errorf("%s %s/%s rules differ from config/rbac/%s (run make chart-generate):\n got %+v\nwant %+v", o.Kind, o.Namespace, o.Name, file, rules, want.Rules)
		}
	}
	if len(watchNamespaces) == 0 {
		o := objs.Get(t, "ClusterRole", fullname+"-manager")
		compare(o, kubeobjects.Typed[*rbacv1.ClusterRole](t, o).Rules, "role.yaml")
	}
	for _, ns := range watchNamespaces {
		o, ok := objs.Find("Role", fullname+"-manager", ns)
		if !ok {
			t.Fatalf("no manager Role in %s", ns)
		}
		compare(o, kubeobjects.Typed[*rbacv1.Role](t, o).Rules, "role.yaml")
		for _, r := range kubeobjects.Typed[*rbacv1.Role](t, o).Rules {
			if len(r.NonResourceURLs) > 0 {
				t.Errorf("manager Role in %s has non-resource rules, which a Role cannot grant: %+v", ns, r)
			}
		}
	}
	o := objs.Get(t, "Role", fullname+"-leader-election")
	compare(o, kubeobjects.Typed[*rbacv1.Role](t, o).Rules, "leader_election_role.yaml")
	o = objs.Get(t, "ClusterRole", fullname+"-metrics-auth")
	compare(o, kubeobjects.Typed[*rbacv1.ClusterRole](t, o).Rules, "metrics_auth_role.yaml")
	o = objs.Get(t, "ClusterRole", fullname+"-metrics-reader")
	compare(o, kubeobjects.Typed[*rbacv1.ClusterRole](t, o).Rules, "metrics_reader_role.yaml")
	for _, role := range []string{"editor", "viewer"} {
		o := objs.Get(t, "ClusterRole", fullname+"-workerpool-"+role)
		cr := kubeobjects.Typed[*rbacv1.ClusterRole](t, o)
		file := "workerpool_" + role + "_role.yaml"
		compare(o, cr.Rules, file)
		for k, v := range configRole(t, file).Labels {
			if strings.HasPrefix(k, "rbac.authorization.k8s.io/aggregate-to-") && cr.Labels[k] != v {
				t.Errorf("ClusterRole %s lacks the aggregation label %s=%s of config/rbac/%s", o.Name, k, v, file)
			}
		}
	}
}

// configRole reads a (Cluster)Role of config/rbac strictly.
func configRole(t *testing.T, file string) rbacv1.ClusterRole {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "config", "rbac", file))
	if err != nil {
		t.Fatal(err)
	}
	obj, _, err := kubeobjects.StrictDecoder().Decode(bytes.TrimPrefix(b, []byte("---\n")), nil, nil)
	if err != nil {
		t.Fatalf("config/rbac/%s: %v", file, err)
	}
	switch r := obj.(type) {
	case *rbacv1.ClusterRole:
		return *r
	case *rbacv1.Role:
		return rbacv1.ClusterRole{ObjectMeta: r.ObjectMeta, Rules: r.Rules}
	}
	t.Fatalf("config/rbac/%s is a %T", file, obj)
	return rbacv1.ClusterRole{}
}

// checkCRD: the rendered CRDs are config/crd/bases's, with the keep policy.
func checkCRD(t *testing.T, objs kubeobjects.Objects) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in config/crd/bases (%v)", err)
	}
	var rendered int
	for _, o := range objs {
		if o.Kind == "CustomResourceDefinition" {
			rendered++
		}
	}
	if rendered != len(files) {
		t.Errorf("%d CRDs rendered, config/crd/bases has %d", rendered, len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		obj, _, err := kubeobjects.StrictDecoder().Decode(b, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		want := obj.(*apiextensionsv1.CustomResourceDefinition)
		got := kubeobjects.Typed[*apiextensionsv1.CustomResourceDefinition](t, objs.Get(t, "CustomResourceDefinition", want.Name))
		if got.Annotations[keep] != "keep" {
			t.Errorf("CRD %s annotations %v, want %s: keep, so helm uninstall leaves it and the pools", got.Name, got.Annotations, keep)
		}
		want.Annotations[keep] = "keep"
		if !apiequality.Semantic.DeepEqual(got, want) {
			t.Errorf("CRD %s differs from %s plus the keep annotation (run make chart-generate)", got.Name, f)
		}
	}
}

// defaultArgs are the manager's arguments with the default values.
func defaultArgs(watch []string) []string {
	args := []string{"--health-probe-bind-address=:8081", "--metrics-bind-address=:8443",
		"--leader-elect", "--leader-election-namespace=" + namespace}
	if len(watch) > 0 {
		args = append(args, "--watch-namespaces="+strings.Join(watch, ","))
	}
	return append(args, "--read-queues=true", "--status-interval=15s", "--autoscale-interval=2s", "--scrape-timeout=2s",
		"--scrape-concurrency=64", "--max-concurrent-reconciles=4", "--zap-log-level=info", "--zap-encoder=json")
}

// checkDeployment: the manager Deployment passes kubeobjects.CheckManager,
// runs replicas of the manager as the chart's ServiceAccount with wantArgs
// (leader election when there are several), is told apart from the
// workers, and serves metrics on 8443.
func checkDeployment(t *testing.T, objs kubeobjects.Objects, replicas int32, wantArgs []string) *appsv1.Deployment {
	t.Helper()
	d, c := kubeobjects.CheckManager(t, objs, fullname, fullname+"-metrics")
	if d.Spec.Replicas == nil || *d.Spec.Replicas != replicas {
		t.Errorf("replicas = %v, want %d", d.Spec.Replicas, replicas)
	}
	pod := d.Spec.Template.Spec
	if pod.ServiceAccountName != fullname {
		t.Errorf("serviceAccountName = %q, want %q", pod.ServiceAccountName, fullname)
	}
	objs.Get(t, "ServiceAccount", pod.ServiceAccountName)
	if d.Spec.Template.Labels["app.kubernetes.io/managed-by"] == "workerpool-operator" {
		t.Error("the operator's pods carry the workers' managed-by label")
	}
	if c.Name != "manager" || !slices.Equal(c.Command, []string{"/manager"}) {
		t.Errorf("container %q command %v, want manager running /manager", c.Name, c.Command)
	}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args = %q\nwant %q", c.Args, wantArgs)
	}
	if leader := slices.Contains(c.Args, "--leader-elect"); replicas > 1 && !leader {
		t.Errorf("%d replicas without --leader-elect", replicas)
	}
	// The metrics Service reaches the manager's metrics port over https 8443.
	if metricsPort := kubeobjects.FlagPort(t, c.Args, "--metrics-bind-address"); metricsPort != 8443 {
		t.Errorf("the manager serves metrics on %d, want 8443 (the metrics Service's port)", metricsPort)
	}
	return d
}

// ---------------------------------------------------------------------------
// The manager accepts the chart's flags

var manager struct {
	once sync.Once
	path string
	err  error
}

// tmpDir holds the manager binary built for the test run.
var tmpDir string

func TestMain(m *testing.M) {
	var err error
	if tmpDir, err = os.MkdirTemp("", "chart-test-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(tmpDir)
	os.Exit(code)
}

// checkManagerAcceptsArgs runs the real manager with the chart's arguments
// and a kubeconfig that does not exist: it must get past parsing and
// validating its flags (an unknown flag exits 2, a bad value names its flag)
// and stop where it looks for the cluster.
func checkManagerAcceptsArgs(t *testing.T, args []string) {
	t.Helper()
	manager.once.Do(func() {
		manager.path = filepath.Join(tmpDir, "manager")
		cmd := exec.Command(goCommand(t), "build", "-o", manager.path, "./cmd/manager")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			manager.err = fmt.Errorf("go build ./cmd/manager: %v\n%s", err, out)
		}
	})
	if manager.err != nil {
		t.Fatal(manager.err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	missing := filepath.Join(t.TempDir(), "no-kubeconfig")
	cmd := exec.CommandContext(ctx, manager.path, append(slices.Clone(args), "--kubeconfig="+missing)...)
	cmd.Env = []string{"HOME=" + t.TempDir()} // no KUBECONFIG, no in-cluster service host
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), `"kubeconfig: `) {
		t.Errorf("the manager does not accept the chart's arguments %q: %v\n%s", args, err, out)
	}
}

// ---------------------------------------------------------------------------
// helm and decoding

func goCommand(t *testing.T) string {
	t.Helper()
	// go test puts its own toolchain's bin first in PATH.
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to run the pinned helm: %v", err)
	}
	return gobin
}

var helmBinary struct {
	once sync.Once
	path string
	err  error
}

// helmPath is the executable of the helm pinned in hack/tools/go.mod, as
// `go tool` builds and caches it: `go tool helm version` builds it (once),
// `go tool -n helm` names it. Running it directly saves go tool's second
// per call.
func helmPath(t *testing.T) string {
	t.Helper()
	helmBinary.once.Do(func() {
		modfile, err := filepath.Abs(filepath.Join(repoRoot, "hack", "tools", "go.mod"))
		if err != nil {
			helmBinary.err = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, goCommand(t), "tool", "-modfile="+modfile, "helm", "version").CombinedOutput(); err != nil {
			helmBinary.err = fmt.Errorf("go tool helm version: %v\n%s", err, out)
			return
		}
		out, err := exec.CommandContext(ctx, goCommand(t), "tool", "-n", "-modfile="+modfile, "helm").Output()
		if err != nil {
			helmBinary.err = fmt.Errorf("go tool -n helm: %v", err)
			return
		}
		helmBinary.path = strings.TrimSpace(string(out))
		if _, err := os.Stat(helmBinary.path); err != nil {
			helmBinary.err = fmt.Errorf("go tool -n helm names %q: %v", helmBinary.path, err)
		}
	})
	if helmBinary.err != nil {
		t.Fatal(helmBinary.err)
	}
	return helmBinary.path
}

// helm runs the pinned helm, with its cache, config and data directories
// (and kubeconfig) in a temporary directory.
func helm(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, helmPath(t), args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(home, "cache"), "HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"), "KUBECONFIG="+filepath.Join(home, "no-kubeconfig"))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

func valuesFile(t *testing.T, values string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// render runs helm template with values (YAML) and decodes every document.
func render(t *testing.T, values string) kubeobjects.Objects {
	t.Helper()
	out, stderr, err := helm(t, "template", release, chartDir, "--namespace", namespace, "--values", valuesFile(t, values))
	if err != nil {
		t.Fatalf("helm template with %q: %v\n%s", values, err, stderr)
	}
	return kubeobjects.Decode(t, "helm", []byte(out))
}

// renderError runs helm template, which must fail, and returns its error.
func renderError(t *testing.T, values string) string {
	t.Helper()
	out, stderr, err := helm(t, "template", release, chartDir, "--namespace", namespace, "--values", valuesFile(t, values))
	if err == nil {
		t.Fatalf("helm template accepted %q:\n%s", values, out)
	}
	return stderr
}

// chartMeta is the part of Chart.yaml the tests compare with.
func chartMeta(t *testing.T) (version, appVersion string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if c.Version == "" || c.AppVersion == "" {
		t.Fatalf("Chart.yaml has version %q appVersion %q", c.Version, c.AppVersion)
	}
	return c.Version, c.AppVersion
}

func chartVersion(t *testing.T) string { v, _ := chartMeta(t); return v }
func appVersion(t *testing.T) string   { _, a := chartMeta(t); return a }
