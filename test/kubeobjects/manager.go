package kubeobjects

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// CheckBindings: every (Cluster)RoleBinding of the install refers, in the
// rbac API group, to a role the install itself renders (a ClusterRoleBinding
// to a ClusterRole, a RoleBinding's Role in the binding's own namespace),
// and binds exactly one subject: the ServiceAccount the install renders in
// namespace and the manager Deployment runs as. An install that binds
// anything else grants rights to someone the operator is not. It returns
// the number of bindings, for the caller to compare with what it expects.
func CheckBindings(t testing.TB, objs Objects, namespace string) int {
	t.Helper()
	var n int
	for _, o := range objs {
		var ref rbacv1.RoleRef
		var subjects []rbacv1.Subject
		switch b := o.Decoded.(type) {
		case *rbacv1.ClusterRoleBinding:
			ref, subjects = b.RoleRef, b.Subjects
			if ref.Kind != "ClusterRole" {
				t.Errorf("ClusterRoleBinding %s refers to a %s", o.Name, ref.Kind)
			}
		case *rbacv1.RoleBinding:
			ref, subjects = b.RoleRef, b.Subjects
		default:
			continue
		}
		n++
		if ref.APIGroup != rbacv1.GroupName {
			t.Errorf("%s %s: roleRef apiGroup %q", o.Kind, o.Name, ref.APIGroup)
		}
		ns := ""
		if ref.Kind == "Role" {
			ns = o.Namespace
		}
		if _, ok := objs.Find(ref.Kind, ref.Name, ns); !ok {
			t.Errorf("%s %s/%s refers to %s %q, which the install does not render (in %q)", o.Kind, o.Namespace, o.Name, ref.Kind, ref.Name, ns)
		}
		if len(subjects) != 1 {
			t.Errorf("%s %s has %d subjects, want the operator's ServiceAccount", o.Kind, o.Name, len(subjects))
		}
		for _, s := range subjects {
			if s.Kind != rbacv1.ServiceAccountKind || s.Namespace != namespace {
				t.Errorf("%s %s: subject %s %s/%s, want a ServiceAccount in namespace %s", o.Kind, o.Name, s.Kind, s.Namespace, s.Name, namespace)
			}
			d := Typed[*appsv1.Deployment](t, objs.Get(t, "Deployment", deploymentName(objs)))
			if s.Name != d.Spec.Template.Spec.ServiceAccountName {
				t.Errorf("%s %s binds ServiceAccount %s, but the operator runs as %s", o.Kind, o.Name, s.Name, d.Spec.Template.Spec.ServiceAccountName)
			}
			if _, created := objs.Find("ServiceAccount", s.Name, s.Namespace); !created {
				t.Errorf("%s %s binds ServiceAccount %s/%s, which the install does not render", o.Kind, o.Name, s.Namespace, s.Name)
			}
		}
	}
	return n
}

func deploymentName(objs Objects) string {
	for _, o := range objs {
		if o.Kind == "Deployment" {
			return o.Name
		}
	}
	return ""
}

// CheckManager holds for the manager Deployment of every install: its
// selector selects its pods; it runs one container, restricted (see
// RestrictedViolations), given 10 s to stop; it is probed on /healthz and
// /readyz at the port of --health-probe-bind-address; CPU and memory have
// requests within limits; and the metrics Service, one port named https,
// reaches the port of --metrics-bind-address on the manager's pods. It
// returns the Deployment and its container for the install's own checks.
func CheckManager(t testing.TB, objs Objects, deployment, metricsService string) (*appsv1.Deployment, corev1.Container) {
	t.Helper()
	d := Typed[*appsv1.Deployment](t, objs.Get(t, "Deployment", deployment))
	pod := d.Spec.Template.Spec
	if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("Deployment selector %v does not match its pod template labels %v (%v)", d.Spec.Selector, d.Spec.Template.Labels, err)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("manager pod has %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g != 10 {
		t.Errorf("terminationGracePeriodSeconds = %v, want 10", g)
	}
	for _, v := range RestrictedViolations(pod) {
		t.Errorf("the manager pod is not restricted: %s", v)
	}

	probePort := FlagPort(t, c.Args, "--health-probe-bind-address")
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || ContainerPort(t, c, p.probe.HTTPGet.Port.String()) != probePort {
			t.Errorf("%s probe GET %s on %s, want %s on %d", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path, probePort)
		}
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
		if req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
			t.Errorf("%s request %s / limit %s: want both set, request <= limit", r, req.String(), lim.String())
		}
	}

	svc := Typed[*corev1.Service](t, objs.Get(t, "Service", metricsService))
	metricsPort := FlagPort(t, c.Args, "--metrics-bind-address")
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "https" || int(svc.Spec.Ports[0].Port) != metricsPort ||
		ContainerPort(t, c, svc.Spec.Ports[0].TargetPort.String()) != metricsPort {
		t.Errorf("metrics Service ports = %+v, want https %d -> the manager's %d", svc.Spec.Ports, metricsPort, metricsPort)
	}
	if len(svc.Spec.Selector) == 0 || !labels.Set(svc.Spec.Selector).AsSelector().Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("metrics Service selector %v does not select the manager pods %v", svc.Spec.Selector, d.Spec.Template.Labels)
	}
	return d, c
}

// RestrictedViolations checks a pod against the restricted Pod Security
// Standard (the controls a Deployment's template can break), plus a
// read-only root filesystem as config/manager sets it: the operator's
// namespace enforces restricted, so a violation is a pod that never starts.
func RestrictedViolations(pod corev1.PodSpec) []string {
	var out []string
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		out = append(out, "host namespaces")
	}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			out = append(out, "hostPath volume "+v.Name)
		}
	}
	psc := pod.SecurityContext
	podNonRoot := psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
	podSeccomp := psc != nil && psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault
	if psc != nil && psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		out = append(out, "pod runAsUser 0")
	}
	for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
		sc := c.SecurityContext
		if sc == nil {
			out = append(out, c.Name+": no securityContext")
			continue
		}
		if sc.Privileged != nil && *sc.Privileged {
			out = append(out, c.Name+": privileged")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			out = append(out, c.Name+": allowPrivilegeEscalation is not false")
		}
		if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
			out = append(out, c.Name+": capabilities do not drop ALL (or add some)")
		}
		if !podNonRoot && (sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot) {
			out = append(out, c.Name+": runAsNonRoot is not true")
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			out = append(out, c.Name+": runAsUser 0")
		}
		if !podSeccomp && (sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault) {
			out = append(out, c.Name+": seccompProfile is not RuntimeDefault")
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			out = append(out, c.Name+": readOnlyRootFilesystem is not true") // beyond the standard, as config/manager
		}
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				out = append(out, fmt.Sprintf("%s: hostPort %d", c.Name, p.HostPort))
			}
		}
	}
	return out
}

// ContainerPort resolves a probe's or Service's port (a number, or the name
// of one of the container's ports), failing the test on an unknown name, so
// a probe or Service can be compared with the port a flag names.
func ContainerPort(t testing.TB, c corev1.Container, port string) int {
	t.Helper()
	if n, err := strconv.Atoi(port); err == nil {
		return n
	}
	for _, p := range c.Ports {
		if p.Name == port {
			return int(p.ContainerPort)
		}
	}
	t.Errorf("container %s has no port named %q", c.Name, port)
	return 0
}

// FlagPort is the port of a --flag=host:port argument, a number (the
// manager's flags take no service names): the port the manager really
// listens on, which probes and Services must reach.
func FlagPort(t testing.TB, args []string, flag string) int {
	t.Helper()
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			_, port, err := net.SplitHostPort(v)
			if err != nil {
				t.Fatalf("%s: %v", a, err)
			}
			p, err := strconv.Atoi(port)
			if err != nil {
				t.Fatalf("%s: %v", a, err)
			}
			return p
		}
	}
	t.Fatalf("no %s in %v", flag, args)
	return 0
}
