package cluster

import (
	"errors"
	"testing"
)

func cond(t, s, reason, message string) map[string]any {
	return map[string]any{"type": t, "status": s, "reason": reason, "message": message}
}

func TestOutcome(t *testing.T) {
	withStatus := func(st map[string]any) map[string]any { return map[string]any{"status": st} }
	if d := outcome(map[string]any{}); d.state != waiting || d.why != "" {
		t.Fatalf("no status: %+v", d)
	}
	readyObj := withStatus(map[string]any{"phase": "Running",
		"conditions": []any{cond("Ready", "True", "Running", "")}})
	if d := outcome(readyObj); d.state != ready {
		t.Fatalf("ready: %+v", d)
	}
	pending := withStatus(map[string]any{"phase": "Pending",
		"conditions": []any{cond("Scheduled", "False", "Unschedulable", "0/2 nodes")}})
	if d := outcome(pending); d.state != waiting || d.why != "Unschedulable: 0/2 nodes" {
		t.Fatalf("pending: %+v", d)
	}
	failedObj := withStatus(map[string]any{"phase": "Failed",
		"conditions": []any{cond("Ready", "False", "Failed", "image not found")}})
	if d := outcome(failedObj); d.state != failed || d.why != "Failed: image not found" {
		t.Fatalf("failed: %+v", d)
	}
}

func TestRoute(t *testing.T) {
	ep, px := "http://10.0.0.7:7070", "/api/v1/namespaces/ms/pods/agent-a:7070/proxy"
	cases := []struct {
		access  Access
		inPod   bool
		ep, px  string
		proxy   bool
		errKind error
	}{
		{AccessAuto, false, ep, px, true, nil}, // outside a pod: the API server's proxy
		{AccessAuto, true, ep, px, false, nil}, // inside one: the node network
		{AccessProxy, true, ep, px, true, nil},
		{AccessDirect, false, ep, px, false, nil},
		{AccessAuto, false, ep, "", false, nil}, // no proxy path: direct
		{AccessProxy, false, ep, "", false, ErrConfig},
		{AccessAuto, false, "", "", false, ErrNotRunning},
	}
	for i, c := range cases {
		r, err := route("s", c.access, c.inPod, c.ep, c.px)
		if c.errKind != nil {
			if !errors.Is(err, c.errKind) {
				t.Fatalf("case %d: %v, want %v", i, err, c.errKind)
			}
			continue
		}
		if err != nil || r.proxy != c.proxy {
			t.Fatalf("case %d: %+v %v", i, r, err)
		}
	}
}

func TestPushState(t *testing.T) {
	const image = "reg.test/a:1"
	obj := func(pushedImage string, generation int64, conds ...any) map[string]any {
		st := map[string]any{"conditions": conds}
		if pushedImage != "" {
			st["pushedImage"] = pushedImage
		}
		return map[string]any{"metadata": map[string]any{"generation": generation}, "status": st}
	}
	failed := func(generation int64) any {
		c := cond("Pushed", "False", "PushFailed", "refused")
		c["observedGeneration"] = generation
		return c
	}
	if st := pushState(obj("", 2), image); st.digest != "" || st.failed != "" {
		t.Fatalf("nothing yet: %+v", st)
	}
	if st := pushState(obj("", 2, failed(1)), image); st.failed != "" || st.why == "" {
		t.Fatalf("an older generation's failure is not this push's: %+v", st)
	}
	if st := pushState(obj("", 2, failed(2)), image); st.failed != "PushFailed: refused" {
		t.Fatalf("failed: %+v", st)
	}
	if st := pushState(obj("reg.test/other:1@sha256:00", 2), image); st.digest != "" {
		t.Fatalf("another image: %+v", st)
	}
	if st := pushState(obj(image+"@sha256:ab", 2), image); st.digest != "sha256:ab" {
		t.Fatalf("pushed: %+v", st)
	}
}
