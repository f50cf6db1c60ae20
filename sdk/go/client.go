package microsandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client talks to one node agent. Safe for concurrent use.
type Client struct {
	loc   Location
	http  *http.Client
	token string
	// tokenHeader carries the token: Authorization, or RelayedAuthorization through an API
	// server (which consumes Authorization itself).
	tokenHeader string
	base        string
}

// RelayedAuthorization is the header that carries the agent token through the Kubernetes API
// server's pod proxy.
const RelayedAuthorization = "X-Microsandbox-Authorization"

func newClient(loc Location) *Client {
	base := "http://localhost"
	if !loc.Unix {
		base = "http://" + loc.Endpoint
	}
	return &Client{loc: loc, http: &http.Client{Transport: loc.transport()}, token: loc.token(),
		tokenHeader: "Authorization", base: base}
}

// NewRemoteClient is a client of the agent at baseURL — "http://host:port", or an API server
// pod-proxy URL ("https://apiserver/api/v1/namespaces/NS/pods/POD:PORT/proxy") — over
// httpClient. The token goes in Authorization, or with relayed in RelayedAuthorization (the
// API server takes Authorization for its own credentials). Cluster mode uses it.
func NewRemoteClient(baseURL, token string, httpClient *http.Client, relayed bool) *Client {
	header := "Authorization"
	if relayed {
		header = RelayedAuthorization
	}
	base := strings.TrimSuffix(baseURL, "/")
	return &Client{loc: Location{Endpoint: base}, http: httpClient, token: token,
		tokenHeader: header, base: base}
}

// Endpoint is where this client connects (a socket path or host:port).
func (c *Client) Endpoint() string { return c.loc.Endpoint }

func (c *Client) healthy(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/healthz", nil)
	if err != nil {
		return false
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// do sends a request; body is JSON-encoded unless it is an io.Reader. A non-2xx answer is
// returned as *Error.
func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var r io.Reader
	contentType := ""
	switch b := body.(type) {
	case nil:
	case io.Reader:
		r, contentType = b, "application/octet-stream"
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		r, contentType = bytes.NewReader(data), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set(c.tokenHeader, "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %v", ErrAgentUnreachable, c.loc.Endpoint, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		apiErr := &Error{Status: resp.StatusCode}
		if json.Unmarshal(data, apiErr) != nil || apiErr.Code == "" {
			return nil, fmt.Errorf("microsandbox: unexpected answer %s: %s", resp.Status, bytes.TrimSpace(data))
		}
		return nil, apiErr
	}
	return resp, nil
}

// call sends a request and decodes a JSON answer into out (nil: ignore it).
func (c *Client) call(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("microsandbox: bad answer to %s %s: %w", method, path, err)
	}
	return nil
}

func sandboxPath(name string, rest string) string {
	return "/v1/sandboxes/" + url.PathEscape(name) + rest
}

// SandboxInfo is what the agent says about a sandbox.
type SandboxInfo struct {
	Name        string            `json:"name"`
	Image       string            `json:"image"`
	ImageDigest string            `json:"image_digest"`
	Isolation   string            `json:"isolation"`
	State       string            `json:"state"`
	MemoryMiB   uint32            `json:"memory_mib"`
	CPUs        uint32            `json:"cpus"`
	Detached    bool              `json:"detached"`
	CreatedAt   int64             `json:"created_at"`
	Reason      string            `json:"reason,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// Metrics is a sandbox's resource use.
type Metrics struct {
	Name             string  `json:"name"`
	CPUUsageMicros   uint64  `json:"cpu_usage_us"`
	MemoryBytes      uint64  `json:"memory_bytes"`
	MemoryLimitBytes *uint64 `json:"memory_limit_bytes"`
	DiskReadBytes    uint64  `json:"disk_read_bytes"`
	DiskWriteBytes   uint64  `json:"disk_write_bytes"`
	NetRxBytes       uint64  `json:"net_rx_bytes"`
	NetTxBytes       uint64  `json:"net_tx_bytes"`
	Processes        uint32  `json:"processes"`
}

// VolumeInfo is a named volume.
type VolumeInfo struct {
	Name      string `json:"name"`
	QuotaMiB  uint64 `json:"quota_mib"`
	UsedBytes uint64 `json:"used_bytes"`
}

// List returns every sandbox of the agent.
func (c *Client) List(ctx context.Context) ([]SandboxInfo, error) {
	var out []SandboxInfo
	return out, c.call(ctx, http.MethodGet, "/v1/sandboxes", nil, &out)
}

// Get returns a handle on an existing sandbox (it does not hold the sandbox's lease).
func (c *Client) Get(ctx context.Context, name string) (*Sandbox, error) {
	var info SandboxInfo
	if err := c.call(ctx, http.MethodGet, sandboxPath(name, ""), nil, &info); err != nil {
		return nil, err
	}
	return &Sandbox{c: c, info: info}, nil
}

// Remove removes sandbox name (killed first if running) and everything it stored.
func (c *Client) Remove(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, sandboxPath(name, ""), nil, nil)
}

// AllMetrics returns the metrics of every running sandbox.
func (c *Client) AllMetrics(ctx context.Context) ([]Metrics, error) {
	var out []Metrics
	return out, c.call(ctx, http.MethodGet, "/v1/metrics", nil, &out)
}

// CreateVolume creates named volume name of quotaMiB MiB.
func (c *Client) CreateVolume(ctx context.Context, name string, quotaMiB uint64) (*VolumeInfo, error) {
	var out VolumeInfo
	req := map[string]any{"name": name, "quota_mib": quotaMiB}
	return &out, c.call(ctx, http.MethodPost, "/v1/volumes", req, &out)
}

// Volumes lists the named volumes.
func (c *Client) Volumes(ctx context.Context) ([]VolumeInfo, error) {
	var out []VolumeInfo
	return out, c.call(ctx, http.MethodGet, "/v1/volumes", nil, &out)
}

// RemoveVolume deletes a named volume and its data.
func (c *Client) RemoveVolume(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, "/v1/volumes/"+url.PathEscape(name), nil, nil)
}
