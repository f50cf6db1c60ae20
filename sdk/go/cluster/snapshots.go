package cluster

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	microsandbox "github.com/microsandbox/microsandbox/sdk/go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
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
	var info microsandbox.SnapshotInfo
	err := c.waitSnapshot(ctx, name, "Ready", func(obj map[string]any) (bool, string, error) {
		got, phase, message := snapshotInfo(obj)
		switch phase {
		case "Ready":
			info = got
			return true, "", nil
		case "Failed":
			return false, "", fail(ErrFailed, "SandboxSnapshot %s failed: %s", name, message)
		}
		return false, message, nil
	})
	if err != nil {
		return nil, err
	}
	return &info, nil
}

// PushSnapshot pushes SandboxSnapshot name to a registry as image reference (spec.push) and
// returns once its node-agent pushed it. secret names a docker-config Secret of the namespace
// ("kubectl create secret docker-registry") whose credentials for the registry the operator
// seals to the snapshot's node; "" pushes anonymously.
func (c *Cluster) PushSnapshot(ctx context.Context, name, reference, secret string) (*microsandbox.PushedSnapshot, error) {
	push := map[string]any{"image": reference, "secretRef": nil}
	if secret != "" {
		push["secretRef"] = map[string]any{"name": secret}
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"push": push}})
	if err != nil {
		return nil, err
	}
	if _, err := c.snapshotAPI().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return nil, apiError("push SandboxSnapshot "+name, err)
	}
	var digest string
	err = c.waitSnapshot(ctx, name, "pushed", func(obj map[string]any) (bool, string, error) {
		st := pushState(obj, reference)
		switch {
		case st.digest != "":
			digest = st.digest
			return true, "", nil
		case st.failed != "":
			return false, "", fail(ErrFailed, "SandboxSnapshot %s: %s", name, st.failed)
		}
		return false, st.why, nil
	})
	if err != nil {
		return nil, err
	}
	return &microsandbox.PushedSnapshot{Reference: reference, Digest: digest}, nil
}

// waitSnapshot polls SandboxSnapshot name, at most the ready timeout, until step says it is
// done or returns an error; step's second result says why it still waits (for the timeout's
// error, which says the snapshot is not yet what).
func (c *Cluster) waitSnapshot(ctx context.Context, name, what string, step func(map[string]any) (bool, string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.ReadyTimeout)
	defer cancel()
	for {
		got, err := c.snapshotAPI().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return apiError("get SandboxSnapshot "+name, err)
		}
		done, why, err := step(got.Object)
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return fail(ErrTimeout, "SandboxSnapshot %s is not %s (%s)", name, what, why)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// pushed is where a push of a SandboxSnapshot stands.
type pushed struct {
	// digest once status.pushedImage is image@digest.
	digest string
	// failed: the node-agent's PushFailed for this generation (it retries; the caller hears why).
	failed string
	// why it is still waiting.
	why string
}

// pushState reads a SandboxSnapshot object's push of image. Pure.
func pushState(obj map[string]any, image string) pushed {
	if p, _, _ := unstructured.NestedString(obj, "status", "pushedImage"); strings.HasPrefix(p, image+"@") {
		return pushed{digest: strings.TrimPrefix(p, image+"@")}
	}
	generation, _, _ := unstructured.NestedInt64(obj, "metadata", "generation")
	conditions, _, _ := unstructured.NestedSlice(obj, "status", "conditions")
	for _, c := range conditions {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != "Pushed" {
			continue
		}
		reason, _ := m["reason"].(string)
		message, _ := m["message"].(string)
		observed, _, _ := unstructured.NestedInt64(m, "observedGeneration")
		if reason == "PushFailed" && observed == generation {
			return pushed{failed: reason + ": " + message}
		}
		return pushed{why: reason + ": " + message}
	}
	return pushed{why: "not pushed yet"}
}

// Snapshots lists the namespace's SandboxSnapshots that are Ready (and not being deleted).
func (c *Cluster) Snapshots(ctx context.Context) ([]microsandbox.SnapshotInfo, error) {
	list, err := c.snapshotAPI().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, apiError("list SandboxSnapshots", err)
	}
	var out []microsandbox.SnapshotInfo
	for _, item := range list.Items {
		if item.GetDeletionTimestamp() != nil {
			continue // being deleted: no longer one to start from
		}
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
