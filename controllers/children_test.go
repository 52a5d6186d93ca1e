package controllers

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

func container(ps corev1.PodSpec, name string) *corev1.Container {
	for i := range ps.Containers {
		if ps.Containers[i].Name == name {
			return &ps.Containers[i]
		}
	}
	return nil
}

func envNamed(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// Whatever spec.template sets is kept; the operator adds what the worker
// needs, and its restricted defaults only where the template sets nothing.
func TestTemplateMerge(t *testing.T) {
	p := fullPool()
	p.Spec.Image, p.Spec.Command, p.Spec.Args = "", nil, nil
	p.Spec.Env = []corev1.EnvVar{{Name: "LEVEL", Value: "debug"}, {Name: "DATABASE_URL", Value: "postgres://override"}}
	p.Spec.PodLabels = map[string]string{"team": "ml", v1.PoolLabel: "spoofed"}
	startup := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}
	p.Spec.Template = &corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "scoring", "team": "data"}, Annotations: map[string]string{"example.com/a": "1"}},
		Spec: corev1.PodSpec{
			ImagePullSecrets:          []corev1.LocalObjectReference{{Name: "registry"}},
			PriorityClassName:         "batch",
			TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "zone", WhenUnsatisfiable: corev1.ScheduleAnyway}},
			SecurityContext:           &corev1.PodSecurityContext{RunAsUser: ptr.To(int64(1000))},
			InitContainers: []corev1.Container{{Name: "fetch-handlers", Image: "busybox"},
				{Name: "proxy", Image: "envoy", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)}},
			Containers: []corev1.Container{
				{Name: "log-shipper", Image: "fluent-bit"},
				{Name: "worker", Image: "registry.example/scoring:3", Args: []string{"handlers.py"},
					Env:          []corev1.EnvVar{{Name: "LEVEL", Value: "info"}, {Name: "MODEL", Value: "/models/m1"}},
					VolumeMounts: []corev1.VolumeMount{{Name: "handlers", MountPath: "/app"}, {Name: "scratch", MountPath: "/tmp"}},
					StartupProbe: startup, ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"ready"}}}},
					SecurityContext: &corev1.SecurityContext{ReadOnlyRootFilesystem: ptr.To(false)},
					Ports:           []corev1.ContainerPort{{Name: "debug", ContainerPort: 5678}},
					Lifecycle:       &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 2}}}},
			},
			Volumes: []corev1.Volume{{Name: "handlers", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "scoring-handlers"}}}},
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			TerminationGracePeriodSeconds: ptr.To(int64(600)),
		},
	}
	d := desiredDeployment(p, "abc", specReplicas(p))
	tpl := d.Spec.Template
	ps := tpl.Spec
	if tpl.Labels["app"] != "scoring" || tpl.Labels["team"] != "ml" || tpl.Labels[v1.PoolLabel] != "payments" || tpl.Annotations["example.com/a"] != "1" ||
		tpl.Annotations[v1.ConfigHashAnnotation] != "abc" || tpl.Annotations["kubectl.kubernetes.io/default-container"] != "worker" {
		t.Errorf("template metadata %+v", tpl.ObjectMeta)
	}
	if len(ps.ImagePullSecrets) != 1 || ps.PriorityClassName != "batch" || len(ps.TopologySpreadConstraints) != 1 || len(ps.InitContainers) != 2 ||
		*ps.SecurityContext.RunAsUser != 1000 || ps.SecurityContext.SeccompProfile != nil || *ps.TerminationGracePeriodSeconds != 600 {
		t.Errorf("pod spec fields of the template lost or defaulted over: %+v", ps)
	}
	if ps.Containers[0].Name != "log-shipper" || len(ps.Containers) != 2 {
		t.Errorf("containers %v", ps.Containers)
	}
	w := container(ps, "worker")
	if w.Image != "registry.example/scoring:3" || w.Args[0] != "handlers.py" || w.StartupProbe.Exec.Command[0] != startup.Exec.Command[0] || w.ReadinessProbe.Exec == nil ||
		w.LivenessProbe.HTTPGet.Path != "/livez" || w.Lifecycle == nil || *w.SecurityContext.ReadOnlyRootFilesystem || w.SecurityContext.Capabilities != nil {
		t.Errorf("worker container %+v", w)
	}
	if e := envNamed(w, "LEVEL"); e.Value != "debug" || envNamed(w, "MODEL") == nil || envNamed(w, "DATABASE_URL").Value != "postgres://override" ||
		envNamed(w, "TASKER_CONFIG_PATH").Value != "/etc/tasker/worker.toml" || envNamed(w, "POD_NAME") == nil || w.Env[0].Name != "DATABASE_URL" {
		t.Errorf("env %+v", w.Env)
	}
	if len(w.Ports) != 2 || w.Ports[1].Name != "metrics" || w.Ports[1].ContainerPort != 9090 {
		t.Errorf("ports %+v", w.Ports)
	}
	mounts := map[string]string{}
	for _, m := range w.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	if mounts["tasker-config"] != "/etc/tasker" || mounts["handlers"] != "/app" || mounts["scratch"] != "/tmp" || mounts["tasker-tmp"] != "" {
		t.Errorf("mounts %v: the template mounts its own /tmp, so the operator adds none", mounts)
	}
	if slices.ContainsFunc(ps.Volumes, func(v corev1.Volume) bool { return v.Name == "tasker-tmp" }) || len(ps.Volumes) != 3 {
		t.Errorf("volumes %+v", ps.Volumes)
	}

	// Without a template, the worker is the only container and the
	// restricted defaults apply.
	plain := desiredDeployment(fullPool(), "abc", 3).Spec.Template.Spec
	if len(plain.Containers) != 1 || *plain.SecurityContext.RunAsUser != 65532 || *plain.Containers[0].SecurityContext.ReadOnlyRootFilesystem != true ||
		len(plain.Volumes) != 2 || *plain.TerminationGracePeriodSeconds != 135 {
		t.Errorf("defaults without a template: %+v", plain)
	}
	// The convenience fields fill in the worker the template names.
	p.Spec.Image, p.Spec.Resources = "tasker-worker:v9", corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}
	w = container(desiredDeployment(p, "abc", specReplicas(p)).Spec.Template.Spec, "worker")
	if w.Image != "tasker-worker:v9" || w.Resources.Limits.Memory().String() != "1Gi" {
		t.Errorf("convenience fields on the template's worker: %+v", w)
	}
}

// What the worker needs cannot be taken by the template: its worker.toml
// mount, the metrics port, TASKER_CONFIG_PATH and POD_NAME are the
// operator's whatever the template says (the schema refuses none of these;
// they are ignored, as documented).
func TestTemplateCannotBreakTheWorker(t *testing.T) {
	p := fullPool()
	p.Spec.Env = []corev1.EnvVar{{Name: "POD_NAME", Value: "fixed"}}
	p.Spec.Template = &corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "worker",
			Env:          []corev1.EnvVar{{Name: "TASKER_CONFIG_PATH", Value: "/elsewhere.toml"}},
			Ports:        []corev1.ContainerPort{{Name: "metrics", ContainerPort: 8080}, {Name: "web", ContainerPort: 9090}},
			VolumeMounts: []corev1.VolumeMount{{Name: "mine", MountPath: "/etc/tasker/"}, {Name: "tasker-config", MountPath: "/cfg"}}}},
		Volumes: []corev1.Volume{{Name: "mine", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "tasker-config", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
	}}
	ps := desiredDeployment(p, "abc", specReplicas(p)).Spec.Template.Spec
	w := container(ps, "worker")
	if envNamed(w, "TASKER_CONFIG_PATH").Value != "/etc/tasker/worker.toml" || envNamed(w, "POD_NAME").ValueFrom == nil {
		t.Errorf("env %+v", w.Env)
	}
	if len(w.Ports) != 1 || w.Ports[0].Name != "metrics" || w.Ports[0].ContainerPort != 9090 {
		t.Errorf("ports %+v", w.Ports)
	}
	for _, m := range w.VolumeMounts {
		if m.MountPath == "/etc/tasker/" || m.MountPath == "/cfg" {
			t.Errorf("the template's mount %+v stayed", m)
		}
	}
	for _, v := range ps.Volumes {
		if v.Name == "tasker-config" && v.ConfigMap == nil {
			t.Errorf("the template's volume took the worker.toml volume's name: %+v", v)
		}
	}
}

// spec.rollout reaches the Deployment; spec.suspend scales it to zero.
func TestRolloutAndSuspend(t *testing.T) {
	p := fullPool()
	p.Spec.Rollout = &v1.RolloutSpec{MaxSurge: ptr.To(intstr.FromString("50%")), MaxUnavailable: ptr.To(intstr.FromInt32(0)),
		MinReadySeconds: 10, ProgressDeadlineSeconds: ptr.To(int32(120))}
	d := desiredDeployment(p, "abc", specReplicas(p))
	if s := d.Spec.Strategy; s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate.MaxSurge.StrVal != "50%" ||
		s.RollingUpdate.MaxUnavailable.IntVal != 0 || d.Spec.MinReadySeconds != 10 || *d.Spec.ProgressDeadlineSeconds != 120 {
		t.Errorf("Deployment spec %+v", d.Spec)
	}
	p.Spec.Suspend = true
	if d := desiredDeployment(p, "abc", specReplicas(p)); *d.Spec.Replicas != 0 {
		t.Errorf("a suspended pool's Deployment has %d replicas", *d.Spec.Replicas)
	}
	if desiredPDB(p, specReplicas(p)) != nil {
		t.Error("a suspended pool keeps a default PodDisruptionBudget")
	}
}

func TestDisruptionBudget(t *testing.T) {
	for _, tc := range []struct {
		name      string
		replicas  int32
		spec      *v1.DisruptionSpec
		pdb       string // "" for none, else maxUnavailable=N or minAvailable=N
		policy    policyv1.UnhealthyPodEvictionPolicyType
		available int32 // needed for Ready
	}{
		{"default, 3 replicas", 3, nil, "maxUnavailable=1", policyv1.AlwaysAllow, 2},
		{"default, 1 replica", 1, nil, "", "", 1},
		{"default, 0 replicas", 0, nil, "", "", 0},
		{"min available 50%", 5, &v1.DisruptionSpec{Enabled: true, MinAvailable: ptr.To(intstr.FromString("50%"))}, "minAvailable=50%", policyv1.AlwaysAllow, 3},
		{"max unavailable 2", 5, &v1.DisruptionSpec{Enabled: true, MaxUnavailable: ptr.To(intstr.FromInt32(2)),
			UnhealthyPodEvictionPolicy: policyv1.IfHealthyBudget}, "maxUnavailable=2", policyv1.IfHealthyBudget, 3},
		{"explicit budget on one replica", 1, &v1.DisruptionSpec{Enabled: true, MaxUnavailable: ptr.To(intstr.FromInt32(1))}, "maxUnavailable=1", policyv1.AlwaysAllow, 0},
		{"disabled", 3, &v1.DisruptionSpec{Enabled: false}, "", "", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := fullPool()
			p.Spec.Replicas, p.Spec.Disruption = ptr.To(tc.replicas), tc.spec
			got := ""
			pdb := desiredPDB(p, specReplicas(p))
			if pdb != nil {
				if pdb.Spec.MaxUnavailable != nil {
					got = "maxUnavailable=" + pdb.Spec.MaxUnavailable.String()
				} else {
					got = "minAvailable=" + pdb.Spec.MinAvailable.String()
				}
				if *pdb.Spec.UnhealthyPodEvictionPolicy != tc.policy {
					t.Errorf("policy %s, want %s", *pdb.Spec.UnhealthyPodEvictionPolicy, tc.policy)
				}
			}
			if got != tc.pdb {
				t.Errorf("PodDisruptionBudget %q, want %q", got, tc.pdb)
			}
			if n := neededAvailable(p, specReplicas(p)); n != tc.available {
				t.Errorf("needed available %d, want %d", n, tc.available)
			}
		})
	}
}

// The drift check ignores what the API server defaults and what others
// add, and catches a value someone changed.
func TestUnchangedIgnoresDefaultsAndOthers(t *testing.T) {
	p := fullPool()
	p.Spec.Template = &corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "worker",
		StartupProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}}}}}
	desired := desiredDeployment(p, "abc", specReplicas(p))
	request, err := applyConfiguration(desired)
	if err != nil {
		t.Fatal(err)
	}
	live := desired.DeepCopy()
	// The API server's defaults, and another tool's annotation and sidecar.
	live.Generation, live.ResourceVersion = 3, "42"
	live.Spec.RevisionHistoryLimit, live.Spec.ProgressDeadlineSeconds = ptr.To(int32(10)), ptr.To(int32(600))
	w := container(live.Spec.Template.Spec, "worker")
	w.StartupProbe.SuccessThreshold, w.StartupProbe.FailureThreshold, w.StartupProbe.PeriodSeconds = 1, 3, 10
	w.TerminationMessagePath = "/dev/termination-log"
	live.Spec.Template.Spec.DNSPolicy, live.Spec.Template.Spec.RestartPolicy = corev1.DNSClusterFirst, corev1.RestartPolicyAlways
	live.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"] = "now"
	live.Spec.Template.Spec.Containers = append(live.Spec.Template.Spec.Containers, corev1.Container{Name: "injected", Image: "mesh"})
	if !unchanged(request, live) {
		t.Fatal("defaults and other tools' additions count as a change")
	}
	container(live.Spec.Template.Spec, "worker").Image = "someone-else:1"
	if unchanged(request, live) {
		t.Error("a changed image goes unnoticed")
	}
	p.Spec.Args = []string{"run"}
	desired = desiredDeployment(p, "abc", specReplicas(p))
	if request, err = applyConfiguration(desired); err != nil {
		t.Fatal(err)
	}
	live = desired.DeepCopy()
	live.Spec.Template.Spec.Containers[0].Args = append(live.Spec.Template.Spec.Containers[0].Args, "--extra")
	if unchanged(request, live) {
		t.Error("an argument added by someone else goes unnoticed (args are one value)")
	}
}
