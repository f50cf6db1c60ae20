package cluster

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

type state int

const (
	waiting state = iota
	ready
	failed
)

// decision is where waiting for a Sandbox stands; why is the failure, or while waiting the
// operator's reason it cannot place it.
type decision struct {
	state state
	why   string
}

// outcome reads a Sandbox object's status. Pure.
func outcome(obj map[string]any) decision {
	status, ok, _ := unstructured.NestedMap(obj, "status")
	if !ok {
		return decision{}
	}
	conds, _, _ := unstructured.NestedSlice(status, "conditions")
	cond := func(t string) map[string]any {
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == t {
				return m
			}
		}
		return nil
	}
	if r := cond("Ready"); r != nil && r["status"] == "True" {
		return decision{state: ready}
	}
	if phase, _, _ := unstructured.NestedString(status, "phase"); phase == "Failed" || phase == "Stopped" {
		why := "failed"
		if r := cond("Ready"); r != nil {
			why = fmt.Sprintf("%v: %v", r["reason"], r["message"])
		}
		return decision{state: failed, why: why}
	}
	if s := cond("Scheduled"); s != nil && s["status"] == "False" {
		return decision{why: fmt.Sprintf("%v: %v", s["reason"], s["message"])}
	}
	return decision{}
}
