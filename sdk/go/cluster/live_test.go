package cluster_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	microsandbox "github.com/microsandbox/microsandbox/sdk/go"
	"github.com/microsandbox/microsandbox/sdk/go/cluster"
)

// TestLiveCluster runs against a real cluster with the operator and a node-agent
// (tests/e2e/tests/python_sdk.rs sets MSB_TEST_KUBECONFIG_DEV and MSB_TEST_NAMESPACE).
func TestLiveCluster(t *testing.T) {
	kubeconfig, ns := os.Getenv("MSB_TEST_KUBECONFIG_DEV"), os.Getenv("MSB_TEST_NAMESPACE")
	if kubeconfig == "" || ns == "" {
		t.Skip("no cluster: MSB_TEST_KUBECONFIG_DEV and MSB_TEST_NAMESPACE unset (the cluster e2e sets them)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, access := range []cluster.Access{cluster.AccessDirect, cluster.AccessProxy} {
		c, err := cluster.Connect(ctx, cluster.Options{Kubeconfig: kubeconfig, Namespace: ns, Access: access})
		if err != nil {
			t.Fatal(err)
		}
		name := "go-" + string(access)
		sb, err := c.Create(ctx, name, microsandbox.Image("busybox"), microsandbox.Memory(64),
			microsandbox.Isolation("container"), microsandbox.Env("GREETING", "hi"))
		if err != nil {
			t.Fatalf("%s: create: %v", access, err)
		}
		out, err := sb.Command("sh", "-c", "echo $GREETING").Output(ctx)
		if err != nil || string(out) != "hi\n" {
			t.Fatalf("%s: exec: %q %v", access, out, err)
		}
		if _, err := sb.WriteFile(ctx, "/tmp/f", strings.NewReader("data")); err != nil {
			t.Fatalf("%s: write: %v", access, err)
		}
		if got, err := sb.ReadFile(ctx, "/tmp/f"); err != nil || string(got) != "data" {
			t.Fatalf("%s: read: %q %v", access, got, err)
		}
		list, err := c.List(ctx)
		if err != nil || len(list) == 0 {
			t.Fatalf("%s: list: %v %v", access, list, err)
		}
		if _, err := c.Get(ctx, name); err != nil {
			t.Fatalf("%s: get: %v", access, err)
		}
		// A snapshot of its files, and a sandbox started from it that sees them.
		snap, err := c.Snapshot(ctx, name, name+"-snap")
		if err != nil {
			t.Fatalf("%s: snapshot: %v", access, err)
		}
		if snaps, err := c.Snapshots(ctx); err != nil || !hasSnapshot(snaps, snap.Name) {
			t.Fatalf("%s: snapshots: %v %v", access, snaps, err)
		}
		restored, err := c.Create(ctx, name+"-restored", microsandbox.Image(snap.Image),
			microsandbox.Memory(64), microsandbox.Isolation("container"))
		if err != nil {
			t.Fatalf("%s: create from snapshot: %v", access, err)
		}
		if got, err := restored.ReadFile(ctx, "/tmp/f"); err != nil || string(got) != "data" {
			t.Fatalf("%s: the snapshot's file: %q %v", access, got, err)
		}
		if err := c.Remove(ctx, name+"-restored"); err != nil {
			t.Fatalf("%s: remove restored: %v", access, err)
		}
		// Pushed to the local registry (anonymously), by its node-agent.
		ref := "127.0.0.1:5000/msb-e2e/" + name + ":" + ns
		if p, err := c.PushSnapshot(ctx, snap.Name, ref, ""); err != nil || !strings.HasPrefix(p.Digest, "sha256:") {
			t.Fatalf("%s: push snapshot: %+v %v", access, p, err)
		}
		if err := c.RemoveSnapshot(ctx, snap.Name); err != nil {
			t.Fatalf("%s: remove snapshot: %v", access, err)
		}
		if err := c.Remove(ctx, name); err != nil {
			t.Fatalf("%s: remove: %v", access, err)
		}
		if _, err := c.Get(ctx, name); !errors.Is(err, cluster.ErrNotFound) {
			t.Fatalf("%s: get after remove: %v", access, err)
		}
		if _, err := c.Create(ctx, "go-bind", microsandbox.Bind("/tmp", "/x", false)); !errors.Is(err, microsandbox.ErrUnsupported) {
			t.Fatalf("%s: bind: %v", access, err)
		}
	}
}

func hasSnapshot(list []microsandbox.SnapshotInfo, name string) bool {
	for _, s := range list {
		if s.Name == name {
			return true
		}
	}
	return false
}
