package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"path"
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

// planChildren renders the pool's children. An error means the spec cannot
// be rendered into a worker.toml the worker accepts; it names the field.
func planChildren(pool *workersv1alpha1.WorkerPool) (childPlan, error) {
	toml, hash, err := renderWorkerConfig(pool)
	if err != nil {
		return childPlan{}, err
	}
	p := childPlan{
		ConfigMap:  desiredConfigMap(pool, toml, hash),
		Deployment: desiredDeployment(pool, hash),
		Service:    desiredService(pool),
	}
	if wantsPDB(pool) {
		p.PDB = desiredPDB(pool)
	}
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

// desiredPDB keeps at least all but one pod up during voluntary disruptions
// (node drains), so a drain never takes a whole pool offline at once. Pods
// that are not ready may always be evicted: a crash-looping pool must not
// block a node drain.
func desiredPDB(pool *workersv1alpha1.WorkerPool) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: childMeta(pool, pool.Name),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable:             ptr.To(intstr.FromInt32(maxUnavailable(pool))),
			Selector:                   &metav1.LabelSelector{MatchLabels: selectorLabels(pool)},
			UnhealthyPodEvictionPolicy: ptr.To(policyv1.AlwaysAllow),
		},
	}
}

// wantsPDB: a budget on a single pod would block every node drain.
func wantsPDB(pool *workersv1alpha1.WorkerPool) bool { return replicas(pool) > 1 }

// maxUnavailable is how many of the pool's pods may be down at once by its
// disruption budget: one of two or more, none of a single pod (which has no
// budget, but must be up for the pool to be available).
func maxUnavailable(pool *workersv1alpha1.WorkerPool) int32 {
	if wantsPDB(pool) {
		return 1
	}
	return 0
}

func replicas(pool *workersv1alpha1.WorkerPool) int32 {
	if pool.Spec.Replicas == nil {
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

func desiredDeployment(pool *workersv1alpha1.WorkerPool, configHash string) *appsv1.Deployment {
	s := pool.Spec
	podLabels := maps.Clone(s.PodLabels)
	if podLabels == nil {
		podLabels = map[string]string{}
	}
	maps.Copy(podLabels, childLabels(pool)) // the selector label always wins
	annotations := maps.Clone(s.PodAnnotations)
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[workersv1alpha1.ConfigHashAnnotation] = configHash

	env := []corev1.EnvVar{
		{Name: config.EnvDatabaseURL, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: s.Queue.DatabaseSecretRef.DeepCopy()}},
		{Name: config.EnvConfigPath, Value: path.Join(configMountPath, configFileName)},
		{Name: config.EnvPodName, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
	}
	env = append(env, s.Env...) // later entries win: a team may override any of ours

	probe := func(p string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: p, Port: intstr.FromString(workersv1alpha1.MetricsPortName), Scheme: corev1.URISchemeHTTP}},
			PeriodSeconds: period, FailureThreshold: failures, TimeoutSeconds: 2,
			// Spelled out although it is the API default: the template is
			// compared field by field with the stored one, and a zero here
			// would differ from the defaulted 1 and rewrite the Deployment
			// on every pass.
			SuccessThreshold: 1,
		}
	}
	container := corev1.Container{
		Name:            containerName,
		Image:           s.Image,
		ImagePullPolicy: s.ImagePullPolicy,
		Command:         s.Command,
		Args:            s.Args,
		Env:             env,
		Ports: []corev1.ContainerPort{{
			Name: workersv1alpha1.MetricsPortName, ContainerPort: MetricsPort, Protocol: corev1.ProtocolTCP}},
		Resources:      *s.Resources.DeepCopy(),
		LivenessProbe:  probe("/healthz", 10, 3),
		ReadinessProbe: probe("/readyz", 5, 2),
		VolumeMounts: []corev1.VolumeMount{
			{Name: "config", MountPath: configMountPath, ReadOnly: true},
			{Name: "tmp", MountPath: "/tmp"},
		},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			RunAsNonRoot:             ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
	template := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: annotations},
		Spec: corev1.PodSpec{
			Containers:                    []corev1.Container{container},
			TerminationGracePeriodSeconds: ptr.To(gracePeriod(pool)),
			ServiceAccountName:            s.ServiceAccountName,
			// The API server copies serviceAccountName into this deprecated
			// field and back: owning both is what lets a name removed from
			// the spec leave the pods.
			DeprecatedServiceAccount: s.ServiceAccountName,
			NodeSelector:             s.NodeSelector,
			Tolerations:              s.Tolerations,
			Affinity:                 s.Affinity,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To(int64(runAsUser)),
				RunAsGroup:     ptr.To(int64(runAsUser)),
				FSGroup:        ptr.To(int64(runAsUser)),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: configMapName(pool, configHash)}}}},
				{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
		},
	}
	template.Annotations[workersv1alpha1.TemplateHashAnnotation] = hashOf(template)
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: childMeta(pool, pool.Name),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas(pool)),
			Selector: &metav1.LabelSelector{MatchLabels: selectorLabels(pool)},
			Template: template,
		},
	}
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
