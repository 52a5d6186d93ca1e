package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"path"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workersv1alpha1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
	"github.com/seed-a17b38e7/workerpool-operator/internal/config"
)

const (
	// MetricsPort is the worker's metrics and probe port (worker.toml's
	// default [worker.http] listen_address).
	MetricsPort = 9090
	// DrainGraceMargin is added to spec.drain.timeout for the pods'
	// terminationGracePeriodSeconds: the worker returns what it could not
	// finish to the queue after the drain timeout, and needs a moment for that
	// before the kubelet sends SIGKILL.
	DrainGraceMargin = 15 * time.Second

	configFileName  = "worker.toml"
	configMountPath = "/etc/tasker"
	containerName   = "worker"
	managedByLabel  = "app.kubernetes.io/managed-by"
	managedBy       = "workerpool-operator"
	// runAsUser is the non-root user the pods run as when the image does not
	// say (distroless "nonroot"), so the restricted Pod Security Standard holds.
	runAsUser = 65532
)

// configMapName is the name of the pool's worker.toml ConfigMap for a given
// content hash. A new file is a new ConfigMap (immutable), so the pods of an
// older ReplicaSet that restart mid-rollout still read their own file, and a
// rollback finds its file again.
func configMapName(pool *workersv1alpha1.WorkerPool, hash string) string {
	return pool.Name + "-config-" + hash
}

// childPlan is every object a pool should have, computed from its spec alone.
// The reconciler applies each with server-side apply, so a field that leaves
// the spec leaves the object too; PDB nil means the pool should have none.
type childPlan struct {
	ConfigMap  *corev1.ConfigMap
	Deployment *appsv1.Deployment
	Service    *corev1.Service
	PDB        *policyv1.PodDisruptionBudget
}

// objects are the planned children in the order they are applied: the
// ConfigMap before the Deployment whose pods mount it.
func (p childPlan) objects() []client.Object {
	out := []client.Object{p.ConfigMap, p.Deployment, p.Service}
	if p.PDB != nil {
		out = append(out, p.PDB)
	}
	return out
}

// planChildren renders the pool's children, its Deployment at the given
// replica count. An error means the spec cannot be rendered into a
// worker.toml the worker accepts; it names the field.
func planChildren(pool *workersv1alpha1.WorkerPool, replicas int32) (childPlan, error) {
	toml, hash, err := renderWorkerConfig(pool)
	if err != nil {
		return childPlan{}, err
	}
	p := childPlan{
		ConfigMap:  desiredConfigMap(pool, toml, hash),
		Deployment: desiredDeployment(pool, hash, replicas),
		Service:    desiredService(pool),
	}
	p.PDB = desiredPDB(pool, replicas)
	owner := *metav1.NewControllerRef(pool, workersv1alpha1.GroupVersion.WithKind("WorkerPool"))
	for _, o := range p.objects() {
		o.SetOwnerReferences([]metav1.OwnerReference{owner})
	}
	return p, nil
}

// selectorLabels select the pool's pods; they are immutable on the Deployment.
func selectorLabels(pool *workersv1alpha1.WorkerPool) map[string]string {
	return map[string]string{workersv1alpha1.PoolLabel: pool.Name}
}

// childLabels go on every object the operator creates for a pool, so the
// operator's caches can be limited to them.
func childLabels(pool *workersv1alpha1.WorkerPool) map[string]string {
	return map[string]string{
		workersv1alpha1.PoolLabel:    pool.Name,
		"app.kubernetes.io/name":     "tasker-worker",
		"app.kubernetes.io/instance": pool.Name,
		managedByLabel:               managedBy,
	}
}

func childMeta(pool *workersv1alpha1.WorkerPool, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: pool.Namespace, Labels: childLabels(pool)}
}

func desiredConfigMap(pool *workersv1alpha1.WorkerPool, toml, hash string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: childMeta(pool, configMapName(pool, hash)),
		Data:       map[string]string{configFileName: toml},
		Immutable:  ptr.To(true),
	}
}

func desiredService(pool *workersv1alpha1.WorkerPool) *corev1.Service {
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: childMeta(pool, pool.Name),
		Spec: corev1.ServiceSpec{
			ClusterIP:                corev1.ClusterIPNone,
			Selector:                 selectorLabels(pool),
			PublishNotReadyAddresses: true, // metrics of a draining pod are still worth reading
			Ports: []corev1.ServicePort{{
				Name: workersv1alpha1.MetricsPortName, Port: MetricsPort, Protocol: corev1.ProtocolTCP,
				TargetPort: intstr.FromString(workersv1alpha1.MetricsPortName),
			}},
		},
	}
}

// desiredPDB is the pool's PodDisruptionBudget, nil for none. By default a
// pool of two or more pods may lose one at a time to voluntary disruptions
// (node drains), and a single pod has no budget (one would block every
// drain); spec.disruption sets the budget or turns it off. Pods that are not
// ready may always be evicted unless spec.disruption says otherwise: a
// crash-looping pool must not block a node drain.
func desiredPDB(pool *workersv1alpha1.WorkerPool, replicas int32) *policyv1.PodDisruptionBudget {
	budget := disruptionBudget(pool, replicas)
	if budget == nil {
		return nil
	}
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: childMeta(pool, pool.Name),
		Spec:       *budget,
	}
}

// disruptionBudget is the spec of the pool's PodDisruptionBudget, nil for none.
func disruptionBudget(pool *workersv1alpha1.WorkerPool, replicas int32) *policyv1.PodDisruptionBudgetSpec {
	d := pool.Spec.Disruption
	spec := &policyv1.PodDisruptionBudgetSpec{
		Selector:                   &metav1.LabelSelector{MatchLabels: selectorLabels(pool)},
		UnhealthyPodEvictionPolicy: ptr.To(policyv1.AlwaysAllow),
	}
	if d != nil && d.UnhealthyPodEvictionPolicy != "" {
		spec.UnhealthyPodEvictionPolicy = ptr.To(d.UnhealthyPodEvictionPolicy)
	}
	switch {
	case d != nil && !d.Enabled:
		return nil
	case d != nil && d.MinAvailable != nil:
		spec.MinAvailable = d.MinAvailable
	case d != nil && d.MaxUnavailable != nil:
		spec.MaxUnavailable = d.MaxUnavailable
	case replicas > 1:
		spec.MaxUnavailable = ptr.To(intstr.FromInt32(1))
	default:
		return nil
	}
	return spec
}

// neededAvailable is how many of the pool's pods must be available for it
// to be Available (and Ready): what its disruption budget keeps up, or all
// but one of two or more pods when it has none.
func neededAvailable(pool *workersv1alpha1.WorkerPool, replicas int32) int32 {
	want := replicas
	budget := disruptionBudget(pool, replicas)
	switch {
	case budget != nil && budget.MinAvailable != nil:
		n, _ := intstr.GetScaledValueFromIntOrPercent(budget.MinAvailable, int(want), true)
		return min(want, int32(n))
	case budget != nil && budget.MaxUnavailable != nil:
		n, _ := intstr.GetScaledValueFromIntOrPercent(budget.MaxUnavailable, int(want), true)
		return max(0, want-int32(n))
	case want > 1:
		return want - 1
	}
	return want
}

// specReplicas is the pod count the spec asks for without an autoscaler:
// spec.replicas, or none while suspended.
func specReplicas(pool *workersv1alpha1.WorkerPool) int32 {
	switch {
	case pool.Spec.Suspend:
		return 0
	case pool.Spec.Replicas == nil:
		return 1
	}
	return *pool.Spec.Replicas
}

// gracePeriod is the drain timeout plus DrainGraceMargin, in whole seconds.
func gracePeriod(pool *workersv1alpha1.WorkerPool) int64 {
	d := 60 * time.Second
	if v, err := time.ParseDuration(string(pool.Spec.Drain.Timeout)); err == nil && v > 0 {
		d = v
	}
	return int64(math.Ceil((d + DrainGraceMargin).Seconds()))
}

// Names the operator uses in every pod: spec.template may not take them.
const (
	configVolume = "tasker-config"
	tmpVolume    = "tasker-tmp"
)

func desiredDeployment(pool *workersv1alpha1.WorkerPool, configHash string, replicas int32) *appsv1.Deployment {
	template := podTemplate(pool, configHash)
	template.Annotations[workersv1alpha1.TemplateHashAnnotation] = hashOf(template)
	dep := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: childMeta(pool, pool.Name),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: selectorLabels(pool)},
			Template: template,
		},
	}
	if r := pool.Spec.Rollout; r != nil {
		dep.Spec.MinReadySeconds = r.MinReadySeconds
		dep.Spec.ProgressDeadlineSeconds = r.ProgressDeadlineSeconds
		if r.MaxSurge != nil || r.MaxUnavailable != nil {
			dep.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: r.MaxSurge, MaxUnavailable: r.MaxUnavailable}}
		}
	}
	return dep
}

// podTemplate merges the operator's worker into spec.template: it starts
// from the template (or an empty one), lets the convenience fields of the
// spec fill in or replace what they name, and adds what every worker needs
// (its worker.toml mount, the metrics port, DATABASE_URL, TASKER_CONFIG_PATH,
// POD_NAME, a grace period that covers the drain) and, where the template
// sets none, the probes and the restricted security contexts.
func podTemplate(pool *workersv1alpha1.WorkerPool, configHash string) corev1.PodTemplateSpec {
	s := pool.Spec
	var t corev1.PodTemplateSpec
	if s.Template != nil {
		t = *s.Template.DeepCopy()
	}
	t.Labels = merged(t.Labels, s.PodLabels, childLabels(pool)) // the selector label always wins
	t.Annotations = merged(t.Annotations, s.PodAnnotations, map[string]string{
		workersv1alpha1.ConfigHashAnnotation:      configHash,
		"kubectl.kubernetes.io/default-container": containerName, // kubectl logs/exec pick the worker
	})
	t.CreationTimestamp = metav1.Time{}

	ps := &t.Spec
	i := slices.IndexFunc(ps.Containers, func(c corev1.Container) bool { return c.Name == containerName })
	if i < 0 {
		ps.Containers = append([]corev1.Container{{Name: containerName}}, ps.Containers...)
		i = 0
	}
	mergeWorker(&ps.Containers[i], pool)

	if s.ServiceAccountName != "" {
		ps.ServiceAccountName = s.ServiceAccountName
	}
	// The API server copies serviceAccountName into this deprecated field
	// and back: owning both is what lets a name removed from the spec leave
	// the pods.
	ps.DeprecatedServiceAccount = ps.ServiceAccountName
	ps.NodeSelector = merged(ps.NodeSelector, s.NodeSelector)
	ps.Tolerations = append(ps.Tolerations, s.Tolerations...)
	if s.Affinity != nil {
		ps.Affinity = s.Affinity.DeepCopy()
	}
	ps.TerminationGracePeriodSeconds = ptr.To(max(gracePeriod(pool), ptr.Deref(ps.TerminationGracePeriodSeconds, 0)))
	if ps.SecurityContext == nil {
		ps.SecurityContext = &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr.To(true),
			RunAsUser:      ptr.To(int64(runAsUser)),
			RunAsGroup:     ptr.To(int64(runAsUser)),
			FSGroup:        ptr.To(int64(runAsUser)),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		}
	}
	ps.Volumes = slices.DeleteFunc(ps.Volumes, func(v corev1.Volume) bool { return v.Name == configVolume || v.Name == tmpVolume })
	ps.Volumes = append(ps.Volumes, corev1.Volume{Name: configVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: configMapName(pool, configHash)}}}})
	if mountsTmp(ps.Containers[i]) {
		ps.Volumes = append(ps.Volumes, corev1.Volume{Name: tmpVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}
	return t
}

// mergeWorker fills in the worker container c (the template's, or a new one).
func mergeWorker(c *corev1.Container, pool *workersv1alpha1.WorkerPool) {
	s := pool.Spec
	if s.Image != "" {
		c.Image = s.Image
	}
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = s.ImagePullPolicy
	}
	if len(s.Command) > 0 {
		c.Command = s.Command
	}
	if len(s.Args) > 0 {
		c.Args = s.Args
	}
	if len(s.Resources.Limits) > 0 || len(s.Resources.Requests) > 0 || len(s.Resources.Claims) > 0 {
		c.Resources = *s.Resources.DeepCopy()
	}
	// The product's variables first (later ones may refer to them), then
	// the template's and spec.env: a later entry of the same name replaces
	// an earlier one in place, so a team may set its own DATABASE_URL. Where
	// the worker reads its file and its id are the operator's: given again
	// last, they win.
	owned := []corev1.EnvVar{
		{Name: config.EnvConfigPath, Value: path.Join(configMountPath, configFileName)},
		{Name: config.EnvPodName, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
	}
	c.Env = mergedEnv(slices.Concat([]corev1.EnvVar{
		{Name: config.EnvDatabaseURL, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: s.Queue.DatabaseSecretRef.DeepCopy()}},
	}, owned, c.Env, s.Env, owned))
	c.Ports = append(slices.DeleteFunc(c.Ports, func(p corev1.ContainerPort) bool {
		return p.Name == workersv1alpha1.MetricsPortName || p.ContainerPort == MetricsPort // the operator's, refused by the schema
	}), corev1.ContainerPort{Name: workersv1alpha1.MetricsPortName, ContainerPort: MetricsPort, Protocol: corev1.ProtocolTCP})
	if c.LivenessProbe == nil {
		// /livez fails only when the FFI pollers stayed dead past the
		// completion timeout (a restart is then the fix), never for a
		// database outage or a drain.
		c.LivenessProbe = workerProbe("/livez", 10, 3)
	}
	if c.ReadinessProbe == nil {
		c.ReadinessProbe = workerProbe("/readyz", 5, 2)
	}
	c.VolumeMounts = slices.DeleteFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == configVolume || m.Name == tmpVolume || path.Clean(m.MountPath) == configMountPath // the operator's
	})
	tmp := mountsTmp(*c)
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: configVolume, MountPath: configMountPath, ReadOnly: true})
	if tmp {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: tmpVolume, MountPath: "/tmp"})
	}
	if c.SecurityContext == nil {
		c.SecurityContext = &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			RunAsNonRoot:             ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		}
	}
}

// mountsTmp says whether the worker needs the operator's writable /tmp: yes
// unless the template mounts something there itself.
func mountsTmp(c corev1.Container) bool {
	return !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return path.Clean(m.MountPath) == "/tmp" && m.Name != tmpVolume
	})
}

func workerProbe(p string, period, failures int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: p, Port: intstr.FromString(workersv1alpha1.MetricsPortName), Scheme: corev1.URISchemeHTTP}},
		PeriodSeconds: period, FailureThreshold: failures, TimeoutSeconds: 2, SuccessThreshold: 1,
	}
}

// merged is the union of maps, later ones winning; nil when all are empty.
func merged(ms ...map[string]string) map[string]string {
	var out map[string]string
	for _, m := range ms {
		if len(m) > 0 && out == nil {
			out = map[string]string{}
		}
		maps.Copy(out, m)
	}
	return out
}

// mergedEnv keeps one entry per name: the last one given, at the place of
// the first.
func mergedEnv(env []corev1.EnvVar) []corev1.EnvVar {
	var out []corev1.EnvVar
	at := map[string]int{}
	for _, e := range env {
		if i, ok := at[e.Name]; ok {
			out[i] = e
			continue
		}
		at[e.Name] = len(out)
		out = append(out, e)
	}
	return out
}

// hashOf is a short, stable hash of v's JSON form (maps are sorted).
func hashOf(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("hash %T: %v", v, err)) // only API types, which always marshal
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}
