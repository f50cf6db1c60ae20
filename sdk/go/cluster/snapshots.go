package cluster

import (
	"context"
	"time"

	microsandbox "github.com/microsandbox/microsandbox/sdk/go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

var snapshots = schema.GroupVersionResource{Group: "microsandbox.dev", Version: "v1alpha1", Resource: "sandboxsnapshots"}

func (c *Cluster) snapshotAPI() dynamic.ResourceInterface {
	return c.dynamic.Resource(snapshots).Namespace(c.namespace)
}

// Snapshot saves Sandbox sandbox's files as SandboxSnapshot object name (its node-agent pauses
// a running sandbox for the copy and resumes it) and returns once the snapshot is Ready.
// Create sandboxes from it with microsandbox.Image(info.Image) ("snapshot://name"): they run
// on the snapshot's node. The snapshot outlives its sandbox; RemoveSnapshot deletes it.
func (c *Cluster) Snapshot(ctx context.Context, sandbox, name string) (*microsandbox.SnapshotInfo, error) {
	obj := map[string]any{
		"apiVersion": "microsandbox.dev/v1alpha1",
		"kind":       "SandboxSnapshot",
		"metadata":   map[string]any{"name": name, "namespace": c.namespace},
		"spec":       map[string]any{"sandboxRef": map[string]any{"name": sandbox}},
	}
	if _, err := c.snapshotAPI().Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		return nil, apiError("create SandboxSnapshot "+name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.ReadyTimeout)
	defer cancel()
	for {
		got, err := c.snapshotAPI().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, apiError("get SandboxSnapshot "+name, err)
		}
		info, phase, message := snapshotInfo(got.Object)
		switch phase {
		case "Ready":
			return &info, nil
		case "Failed":
			return nil, fail(ErrFailed, "SandboxSnapshot %s failed: %s", name, message)
		}
		select {
		case <-ctx.Done():
			return nil, fail(ErrTimeout, "SandboxSnapshot %s is not Ready (%s)", name, message)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Snapshots lists the namespace's SandboxSnapshots that are Ready.
func (c *Cluster) Snapshots(ctx context.Context) ([]microsandbox.SnapshotInfo, error) {
	list, err := c.snapshotAPI().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, apiError("list SandboxSnapshots", err)
	}
	var out []microsandbox.SnapshotInfo
	for _, item := range list.Items {
		if info, phase, _ := snapshotInfo(item.Object); phase == "Ready" {
			out = append(out, info)
		}
	}
	return out, nil
}

// RemoveSnapshot deletes SandboxSnapshot name (its node-agent removes the files once no
// sandbox made from it exists). No error if it does not exist.
func (c *Cluster) RemoveSnapshot(ctx context.Context, name string) error {
	err := c.snapshotAPI().Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return apiError("delete SandboxSnapshot "+name, err)
	}
	return nil
}

// snapshotInfo reads a SandboxSnapshot object: what SDK users see, its phase and the message of
// its Ready condition. Pure.
func snapshotInfo(obj map[string]any) (microsandbox.SnapshotInfo, string, string) {
	name, _, _ := unstructured.NestedString(obj, "metadata", "name")
	phase, _, _ := unstructured.NestedString(obj, "status", "phase")
	digest, _, _ := unstructured.NestedString(obj, "status", "digest")
	layers, _, _ := unstructured.NestedInt64(obj, "status", "layers")
	message := "not taken yet"
	conditions, _, _ := unstructured.NestedSlice(obj, "status", "conditions")
	for _, c := range conditions {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
			if s, ok := m["message"].(string); ok {
				message = s
			}
		}
	}
	return microsandbox.SnapshotInfo{
		Name:   name,
		Image:  microsandbox.SnapshotScheme + name,
		Digest: digest,
		Layers: int(layers),
	}, phase, message
}
