package microsandbox

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
)

// FileStat describes a file of a sandbox.
type FileStat struct {
	Path  string `json:"path"`
	Kind  string `json:"kind"`
	Size  uint64 `json:"size"`
	Mode  uint32 `json:"mode"`
	MTime int64  `json:"mtime"`
}

func fsPath(name, op, path string) string {
	return sandboxPath(name, "/fs/"+op+"?path="+url.QueryEscape(path))
}

// Open streams a file of the sandbox; close the reader when done.
func (s *Sandbox) Open(ctx context.Context, path string) (io.ReadCloser, error) {
	resp, err := s.c.do(ctx, http.MethodGet, fsPath(s.Name(), "file", path), nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// ReadFile returns a file's whole content.
func (s *Sandbox) ReadFile(ctx context.Context, path string) ([]byte, error) {
	r, err := s.Open(ctx, path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// WriteFile creates or replaces a file with what r yields; returns the bytes written.
func (s *Sandbox) WriteFile(ctx context.Context, path string, r io.Reader) (int64, error) {
	var out struct {
		Bytes int64 `json:"bytes"`
	}
	resp, err := s.c.do(ctx, http.MethodPut, fsPath(s.Name(), "file", path), r)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return out.Bytes, json.NewDecoder(resp.Body).Decode(&out)
}

// ReadDir lists a directory.
func (s *Sandbox) ReadDir(ctx context.Context, path string) ([]FileStat, error) {
	var out []FileStat
	return out, s.c.call(ctx, http.MethodGet, fsPath(s.Name(), "list", path), nil, &out)
}

// Stat describes one file.
func (s *Sandbox) Stat(ctx context.Context, path string) (FileStat, error) {
	var out FileStat
	return out, s.c.call(ctx, http.MethodGet, fsPath(s.Name(), "stat", path), nil, &out)
}

// MkdirAll makes a directory and its parents.
func (s *Sandbox) MkdirAll(ctx context.Context, path string) error {
	req := map[string]any{"path": path, "recursive": true}
	return s.c.call(ctx, http.MethodPost, sandboxPath(s.Name(), "/fs/mkdir"), req, nil)
}

// RemoveAll removes a file or a directory tree.
func (s *Sandbox) RemoveAll(ctx context.Context, path string) error {
	req := map[string]any{"path": path, "recursive": true}
	return s.c.call(ctx, http.MethodPost, sandboxPath(s.Name(), "/fs/remove"), req, nil)
}

// Rename moves a file or directory inside the sandbox.
func (s *Sandbox) Rename(ctx context.Context, from, to string) error {
	return s.c.call(ctx, http.MethodPost, sandboxPath(s.Name(), "/fs/rename"), map[string]string{"from": from, "to": to}, nil)
}

// Copy copies a file or directory tree inside the sandbox.
func (s *Sandbox) Copy(ctx context.Context, from, to string) error {
	return s.c.call(ctx, http.MethodPost, sandboxPath(s.Name(), "/fs/copy"), map[string]string{"from": from, "to": to}, nil)
}
