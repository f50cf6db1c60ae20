package microsandbox

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// ErrUnsupported: something cluster mode cannot do (a bind mount names a directory of the
// node, not of this machine). Compare with errors.Is.
var ErrUnsupported = errors.New("microsandbox: not supported in cluster mode")

// SnapshotScheme prefixes the Image of a cluster snapshot (Cluster.Snapshot returns
// "snapshot://NAME"): a Sandbox object made with it names the SandboxSnapshot in
// spec.snapshotRef. No OCI reference contains "://", so none is mistaken for one.
const SnapshotScheme = "snapshot://"

var pullPolicies = map[string]string{"always": "Always", "if-not-present": "IfNotPresent", "never": "Never"}

// SandboxObject is the Kubernetes Sandbox object (microsandbox.dev/v1alpha1) that cluster mode
// creates for Create(name, opts...) in namespace, as a JSON-ready map (the package
// microsandbox/cluster posts it). Pure.
func SandboxObject(namespace, name string, opts ...Option) (map[string]any, error) {
	req := createRequest{Name: name, Image: "python", MemoryMiB: 512, CPUs: 1}
	for _, o := range opts {
		o(&req)
	}
	resources := map[string]any{"memory": fmt.Sprintf("%dMi", req.MemoryMiB), "cpus": req.CPUs}
	if req.PidsLimit > 0 {
		resources["pids"] = req.PidsLimit
	}
	spec := map[string]any{"resources": resources}
	if snapshot, ok := strings.CutPrefix(req.Image, SnapshotScheme); ok {
		// A SandboxSnapshot of the namespace (Cluster.Snapshot), not an OCI reference.
		spec["snapshotRef"] = map[string]any{"name": snapshot}
	} else {
		spec["image"] = req.Image
	}
	if req.PullPolicy != "" {
		p, ok := pullPolicies[req.PullPolicy]
		if !ok {
			return nil, fmt.Errorf("%w: pull policy %q", ErrInvalidRequest, req.PullPolicy)
		}
		spec["imagePullPolicy"] = p
	}
	if req.Isolation != "" {
		spec["isolation"] = req.Isolation
	}
	if len(req.Env) > 0 {
		env := make([]map[string]string, 0, len(req.Env))
		for _, k := range slices.Sorted(maps.Keys(req.Env)) {
			env = append(env, map[string]string{"name": k, "value": req.Env[k]})
		}
		spec["env"] = env
	}
	if req.Workdir != "" {
		spec["workdir"] = req.Workdir
	}
	var volumes []map[string]any
	for _, m := range req.Mounts {
		switch m.Kind {
		case "named":
			volumes = append(volumes, map[string]any{"path": m.Path, "readOnly": m.Readonly,
				"named": map[string]any{"name": m.Name}})
		case "tmpfs":
			volumes = append(volumes, map[string]any{"path": m.Path,
				"tmpfs": map[string]any{"size": fmt.Sprintf("%dMi", m.SizeMiB)}})
		default:
			return nil, fmt.Errorf("%w: bind mounts name a directory of the node that runs the "+
				"sandbox, not this machine's; use a NamedVolume or write files after creating it",
				ErrUnsupported)
		}
	}
	if volumes != nil {
		spec["volumes"] = volumes
	}
	// Always explicit: the SDK's default (no network) is not the CRD's (public_only).
	network := map[string]any{"policy": "none"}
	if req.Network != nil {
		network["policy"] = req.Network.Policy
		if len(req.Network.Allow) > 0 {
			network["allow"] = req.Network.Allow
		}
	}
	spec["network"] = network
	if req.IdleSecs > 0 {
		spec["lifetime"] = map[string]any{"idleTimeout": fmt.Sprintf("%ds", req.IdleSecs)}
	}
	return map[string]any{
		"apiVersion": "microsandbox.dev/v1alpha1",
		"kind":       "Sandbox",
		"metadata": map[string]any{
			"name":      name,
			"namespace": namespace,
			"labels":    map[string]any{"app.kubernetes.io/created-by": "microsandbox-sdk"},
		},
		"spec": spec,
	}, nil
}
