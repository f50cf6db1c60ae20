package microsandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Option configures a sandbox at Create.
type Option func(*createRequest)

type mountSpec struct {
	Kind     string `json:"kind"`
	Path     string `json:"path"`
	HostPath string `json:"host_path,omitempty"`
	Name     string `json:"name,omitempty"`
	Readonly bool   `json:"readonly,omitempty"`
	SizeMiB  uint32 `json:"size_mib,omitempty"`
}

type networkSpec struct {
	Policy string   `json:"policy"`
	Allow  []string `json:"allow,omitempty"`
}

type createRequest struct {
	Name       string            `json:"name"`
	Image      string            `json:"image"`
	MemoryMiB  uint32            `json:"memory_mib"`
	CPUs       uint32            `json:"cpus"`
	Env        map[string]string `json:"env,omitempty"`
	Workdir    string            `json:"workdir,omitempty"`
	Isolation  string            `json:"isolation,omitempty"`
	Detached   bool              `json:"detached"`
	Labels     map[string]string `json:"labels,omitempty"`
	Mounts     []mountSpec       `json:"mounts,omitempty"`
	Network    *networkSpec      `json:"network,omitempty"`
	PidsLimit  uint32            `json:"pids_limit,omitempty"`
	DiskMiB    uint64            `json:"disk_mib,omitempty"`
	PullPolicy string            `json:"pull_policy,omitempty"`
	IdleSecs   uint64            `json:"idle_timeout_secs,omitempty"`
	Pool       string            `json:"pool,omitempty"`
}

// defaultRequest is what Create asks for before its options apply.
func defaultRequest(name string) createRequest {
	return createRequest{Name: name, Image: "python", MemoryMiB: 512, CPUs: 1}
}

// Image sets the OCI image (default "python").
func Image(image string) Option { return func(r *createRequest) { r.Image = image } }

// Memory sets the memory in MiB (default 512).
func Memory(mib uint32) Option { return func(r *createRequest) { r.MemoryMiB = mib } }

// CPUs sets the virtual CPUs (default 1).
func CPUs(n uint32) Option { return func(r *createRequest) { r.CPUs = n } }

// Env sets an environment variable of every command.
func Env(key, value string) Option {
	return func(r *createRequest) {
		if r.Env == nil {
			r.Env = map[string]string{}
		}
		r.Env[key] = value
	}
}

// Workdir sets the working directory of commands.
func Workdir(dir string) Option { return func(r *createRequest) { r.Workdir = dir } }

// Isolation asks for exactly "microvm" or "container" (default: the node's strongest).
func Isolation(isolation string) Option { return func(r *createRequest) { r.Isolation = isolation } }

// IdleTimeout suspends the sandbox (state "suspended": frozen, memory kept, no CPU) after d
// (whole seconds, at least one) without a command or file operation; the next one resumes it.
func IdleTimeout(d time.Duration) Option {
	return func(r *createRequest) { r.IdleSecs = max(1, uint64(d.Round(time.Second)/time.Second)) }
}

// Detached lets the sandbox outlive this program (until removed).
func Detached() Option { return func(r *createRequest) { r.Detached = true } }

// Label adds a label.
func Label(key, value string) Option {
	return func(r *createRequest) {
		if r.Labels == nil {
			r.Labels = map[string]string{}
		}
		r.Labels[key] = value
	}
}

// Bind mounts host directory hostPath (relative: from the current directory) at path.
func Bind(hostPath, path string, readonly bool) Option {
	return func(r *createRequest) {
		abs, err := filepath.Abs(hostPath)
		if err != nil {
			abs = hostPath
		}
		r.Mounts = append(r.Mounts, mountSpec{Kind: "bind", Path: path, HostPath: abs, Readonly: readonly})
	}
}

// NamedVolume mounts named volume name at path.
func NamedVolume(name, path string, readonly bool) Option {
	return func(r *createRequest) {
		r.Mounts = append(r.Mounts, mountSpec{Kind: "named", Path: path, Name: name, Readonly: readonly})
	}
}

// Tmpfs mounts a memory-backed file system of sizeMiB at path.
func Tmpfs(path string, sizeMiB uint32) Option {
	return func(r *createRequest) {
		r.Mounts = append(r.Mounts, mountSpec{Kind: "tmpfs", Path: path, SizeMiB: sizeMiB})
	}
}

// Network sets the network policy: "none" (default), "public_only" or "allow_all", plus
// extra allowed hosts or CIDRs.
func Network(policy string, allow ...string) Option {
	return func(r *createRequest) { r.Network = &networkSpec{Policy: policy, Allow: allow} }
}

// Sandbox is one sandbox of the agent.
type Sandbox struct {
	c     *Client
	mu    sync.Mutex
	info  SandboxInfo
	lease *websocket.Conn
}

// Create pulls the image if needed and boots sandbox name. An attached sandbox (the default)
// is removed when this program ends or by Remove; Stop leaves it listed as stopped.
func (c *Client) Create(ctx context.Context, name string, opts ...Option) (*Sandbox, error) {
	req := defaultRequest(name)
	for _, o := range opts {
		o(&req)
	}
	var info SandboxInfo
	if err := c.call(ctx, http.MethodPost, "/v1/sandboxes", req, &info); err != nil {
		return nil, err
	}
	sb := &Sandbox{c: c, info: info}
	if !req.Detached {
		conn, err := c.dialWS(ctx, sandboxPath(name, "/lease"))
		if err != nil {
			// Without a lease the agent would remove it after a grace period anyway.
			rmCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = c.Remove(rmCtx, name)
			return nil, err
		}
		sb.lease = conn
		// Keep reading so that pings are answered while the program runs.
		go func() {
			for {
				if _, _, err := conn.Read(context.Background()); err != nil {
					return
				}
			}
		}()
	}
	return sb, nil
}

// Name of the sandbox.
func (s *Sandbox) Name() string { return s.info.Name }

// Info is what the agent said about it last (see Refresh).
func (s *Sandbox) Info() SandboxInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info
}

func (s *Sandbox) set(info SandboxInfo) SandboxInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.info = info
	return info
}

// Refresh asks the agent for its current state.
func (s *Sandbox) Refresh(ctx context.Context) (SandboxInfo, error) {
	var info SandboxInfo
	if err := s.c.call(ctx, http.MethodGet, sandboxPath(s.Name(), ""), nil, &info); err != nil {
		return SandboxInfo{}, err
	}
	return s.set(info), nil
}

type stopRequest struct {
	TimeoutMs *uint64 `json:"timeout_ms,omitempty"`
}

func millis(d time.Duration) *uint64 {
	if d <= 0 {
		return nil
	}
	ms := uint64(d.Milliseconds())
	return &ms
}

// Stop sends SIGTERM, then SIGKILL after grace (0: the agent's default, 10 s). The sandbox
// stays listed as stopped until removed.
func (s *Sandbox) Stop(ctx context.Context, grace time.Duration) (SandboxInfo, error) {
	var info SandboxInfo
	if err := s.c.call(ctx, http.MethodPost, sandboxPath(s.Name(), "/stop"), stopRequest{millis(grace)}, &info); err != nil {
		return SandboxInfo{}, err
	}
	return s.set(info), nil
}

// Kill stops it now (SIGKILL).
func (s *Sandbox) Kill(ctx context.Context) (SandboxInfo, error) {
	var info SandboxInfo
	if err := s.c.call(ctx, http.MethodPost, sandboxPath(s.Name(), "/kill"), struct{}{}, &info); err != nil {
		return SandboxInfo{}, err
	}
	return s.set(info), nil
}

// Logs returns the sandbox's own output (a microVM's console, a container's init log); with
// tailBytes > 0 at most its last tailBytes bytes.
func (s *Sandbox) Logs(ctx context.Context, tailBytes int64) ([]byte, error) {
	path := sandboxPath(s.Name(), "/logs")
	if tailBytes > 0 {
		path += fmt.Sprintf("?tail_bytes=%d", tailBytes)
	}
	resp, err := s.c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// Start starts a stopped (or failed) sandbox again: the same settings, its files as the stop
// left them. A running one is returned as it is; one created with secrets cannot be started
// again (their values are not kept).
func (s *Sandbox) Start(ctx context.Context) (SandboxInfo, error) {
	return s.change(ctx, "/start")
}

// Pause freezes every process of the sandbox (containers: the cgroup freezer; microVMs: the VMM
// with its vCPUs): memory stays allocated, CPU use stops, commands fail with
// ErrSandboxNotRunning until Resume.
func (s *Sandbox) Pause(ctx context.Context) (SandboxInfo, error) {
	return s.change(ctx, "/pause")
}

// Resume thaws a paused (or idle-suspended) sandbox: its processes go on where they were.
func (s *Sandbox) Resume(ctx context.Context) (SandboxInfo, error) {
	return s.change(ctx, "/resume")
}

func (s *Sandbox) change(ctx context.Context, verb string) (SandboxInfo, error) {
	var info SandboxInfo
	if err := s.c.call(ctx, http.MethodPost, sandboxPath(s.Name(), verb), struct{}{}, &info); err != nil {
		return SandboxInfo{}, err
	}
	return s.set(info), nil
}

// Drain refuses new commands, waits (at most timeout; 0: the agent's default) for running
// ones, then stops it.
func (s *Sandbox) Drain(ctx context.Context, timeout time.Duration) (SandboxInfo, error) {
	var info SandboxInfo
	if err := s.c.call(ctx, http.MethodPost, sandboxPath(s.Name(), "/drain"), stopRequest{millis(timeout)}, &info); err != nil {
		return SandboxInfo{}, err
	}
	return s.set(info), nil
}

// Remove removes it (killed first if running) and everything it stored.
func (s *Sandbox) Remove(ctx context.Context) error {
	s.mu.Lock()
	lease := s.lease
	s.lease = nil
	s.mu.Unlock()
	if lease != nil {
		// Closing the lease makes the agent remove an attached sandbox; remove explicitly too
		// so that Remove returns once it is gone.
		_ = lease.Close(websocket.StatusNormalClosure, "removed")
	}
	err := s.c.Remove(ctx, s.Name())
	if lease != nil && IsNotFound(err) {
		return nil
	}
	return err
}

// Metrics returns its CPU, memory, disk and network use.
func (s *Sandbox) Metrics(ctx context.Context) (Metrics, error) {
	var m Metrics
	return m, s.c.call(ctx, http.MethodGet, sandboxPath(s.Name(), "/metrics"), nil, &m)
}

// IsNotFound reports whether err says a sandbox, volume, path or image does not exist.
func IsNotFound(err error) bool {
	for _, target := range []error{ErrSandboxNotFound, ErrVolumeNotFound, ErrPathNotFound, ErrImageNotFound} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
