package microsandbox

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestSandboxObject(t *testing.T) {
	obj, err := SandboxObject("ns", "job", Image("busybox"), Memory(64), CPUs(2), Env("B", "2"),
		Env("A", "1"), Workdir("/app"), Isolation("container"), NamedVolume("data", "/d", true),
		Tmpfs("/t", 16), Network("public_only", "pypi.org"), IdleTimeout(90*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(obj)
	want := `{"apiVersion":"microsandbox.dev/v1alpha1","kind":"Sandbox",` +
		`"metadata":{"labels":{"app.kubernetes.io/created-by":"microsandbox-sdk"},"name":"job","namespace":"ns"},` +
		`"spec":{"env":[{"name":"A","value":"1"},{"name":"B","value":"2"}],"image":"busybox","isolation":"container",` +
		`"lifetime":{"idleTimeout":"90s"},` +
		`"network":{"allow":["pypi.org"],"policy":"public_only"},"resources":{"cpus":2,"memory":"64Mi"},` +
		`"volumes":[{"named":{"name":"data"},"path":"/d","readOnly":true},{"path":"/t","tmpfs":{"size":"16Mi"}}],` +
		`"workdir":"/app"}}`
	if string(got) != want {
		t.Fatalf("object:\n got %s\nwant %s", got, want)
	}
	plain, _ := SandboxObject("ns", "p")
	if net := plain["spec"].(map[string]any)["network"].(map[string]any); net["policy"] != "none" {
		t.Fatalf("default network: %v", net)
	}
	if _, err := SandboxObject("ns", "b", Bind("/tmp", "/x", false)); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("bind: %v", err)
	}
	restored, _ := SandboxObject("ns", "r", Image(SnapshotScheme+"base"))
	spec := restored["spec"].(map[string]any)
	if _, has := spec["image"]; has || spec["snapshotRef"].(map[string]any)["name"] != "base" {
		t.Fatalf("from a snapshot: %v", spec)
	}
}
