package microsandbox

import (
	"context"
	"net/http"
	"net/url"
)

// PoolInfo is a warm pool of the agent: sandboxes of one template started ahead of need.
type PoolInfo struct {
	Name string `json:"name"`
	// Size is how many sandboxes the pool keeps ready.
	Size uint32 `json:"size"`
	// Ready is how many are started and unclaimed now.
	Ready uint32 `json:"ready"`
	// Claimed counts the creates served from the pool so far.
	Claimed uint64 `json:"claimed"`
	Image   string `json:"image"`
}

// SnapshotInfo is a filesystem snapshot kept by the node: a sandbox's files as an image.
type SnapshotInfo struct {
	Name string `json:"name"`
	// Image is the reference to create sandboxes from it with (Image(info.Image)).
	Image  string `json:"image"`
	Digest string `json:"digest"`
	Layers int    `json:"layers"`
}

// FromPool takes a pre-started sandbox of warm pool name when one is ready (Create then
// applies the name, environment and labels of this call to it); otherwise the sandbox starts
// cold, from the options given. Nothing of a previous user is in a pooled sandbox: pools hand
// each one out once.
func FromPool(name string) Option { return func(r *createRequest) { r.Pool = name } }

// CreatePool keeps size sandboxes of the template that opts describe (the options of Create:
// Image, Memory, Network...) started, ready for creates that name the pool with FromPool.
// Creating a pool that exists replaces its template and size.
func (c *Client) CreatePool(ctx context.Context, name string, size uint32, opts ...Option) (*PoolInfo, error) {
	template := defaultRequest(name)
	for _, o := range opts {
		o(&template)
	}
	// The pool's members outlive this program: they belong to the pool.
	template.Detached = true
	var out PoolInfo
	body := map[string]any{"size": size, "template": template}
	return &out, c.call(ctx, http.MethodPut, "/v1/pools/"+url.PathEscape(name), body, &out)
}

// Pools lists the warm pools.
func (c *Client) Pools(ctx context.Context) ([]PoolInfo, error) {
	var out []PoolInfo
	return out, c.call(ctx, http.MethodGet, "/v1/pools", nil, &out)
}

// RemovePool removes warm pool name and its unclaimed sandboxes (ErrPoolNotFound if none).
func (c *Client) RemovePool(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, "/v1/pools/"+url.PathEscape(name), nil, nil)
}

// Snapshot saves the sandbox's files (it must be paused or stopped) as snapshot name; create
// sandboxes from it with Image(info.Image).
func (s *Sandbox) Snapshot(ctx context.Context, name string) (*SnapshotInfo, error) {
	var out SnapshotInfo
	body := map[string]string{"name": name}
	return &out, s.c.call(ctx, http.MethodPost, sandboxPath(s.Name(), "/snapshot"), body, &out)
}

// Snapshots lists the snapshots the node keeps.
func (c *Client) Snapshots(ctx context.Context) ([]SnapshotInfo, error) {
	var out []SnapshotInfo
	return out, c.call(ctx, http.MethodGet, "/v1/snapshots", nil, &out)
}

// PushedSnapshot is where PushSnapshot put a snapshot.
type PushedSnapshot struct {
	// Reference is the pushed image: Image(p.Reference) starts from it wherever it can be pulled.
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
}

// PushSnapshot pushes snapshot name to a registry as image reference (with the agent's
// registry credentials).
func (c *Client) PushSnapshot(ctx context.Context, name, reference string) (*PushedSnapshot, error) {
	var out PushedSnapshot
	body := map[string]string{"reference": reference}
	return &out, c.call(ctx, http.MethodPost, "/v1/snapshots/"+url.PathEscape(name)+"/push", body, &out)
}

// RemoveSnapshot deletes snapshot name (ErrSnapshotInUse while a sandbox made from it exists).
func (c *Client) RemoveSnapshot(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, "/v1/snapshots/"+url.PathEscape(name), nil, nil)
}
