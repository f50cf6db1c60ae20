package microsandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Stream tags of binary exec frames.
const (
	streamStdout = 1
	streamStderr = 2
	stdinChunk   = 64 * 1024
)

// Cmd is a command to run in a sandbox, in the manner of os/exec.Cmd.
type Cmd struct {
	Path string
	Args []string
	// Extra environment variables ("KEY=VALUE").
	Env []string
	// Working directory (default: the sandbox's workdir).
	Dir string
	// User to run as (name or uid).
	User string
	// Kill the command after Timeout; Run/Wait then return a *TimeoutError.
	Timeout time.Duration
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer

	sb      *Sandbox
	conn    *websocket.Conn
	pid     int
	done    chan struct{}
	waitErr error
}

// Command returns the Cmd to run name with args in the sandbox.
func (s *Sandbox) Command(name string, args ...string) *Cmd {
	return &Cmd{Path: name, Args: args, sb: s}
}

type execRequest struct {
	Command   string            `json:"command"`
	Args      []string          `json:"args"`
	Cwd       string            `json:"cwd,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
	User      string            `json:"user,omitempty"`
	TimeoutMs *uint64           `json:"timeout_ms,omitempty"`
	Stdin     bool              `json:"stdin"`
}

type control struct {
	Type     string `json:"type"`
	Pid      int    `json:"pid,omitempty"`
	ExitCode int    `json:"exit_code"`
	Signal   *int   `json:"signal"`
	TimedOut bool   `json:"timed_out"`
	Error    *Error `json:"error,omitempty"`
}

func (c *Cmd) request() (execRequest, error) {
	env := map[string]string{}
	for _, kv := range c.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return execRequest{}, fmt.Errorf("microsandbox: env entry %q is not KEY=VALUE", kv)
		}
		env[k] = v
	}
	args := c.Args
	if args == nil {
		args = []string{}
	}
	return execRequest{Command: c.Path, Args: args, Cwd: c.Dir, Env: env, User: c.User, TimeoutMs: millis(c.Timeout), Stdin: true}, nil
}

// StdinPipe returns a pipe to the command's stdin; close it to close stdin. Call before Start.
func (c *Cmd) StdinPipe() (io.WriteCloser, error) {
	if c.Stdin != nil || c.conn != nil {
		return nil, errors.New("microsandbox: Stdin already set or command started")
	}
	r, w := io.Pipe()
	c.Stdin = r
	return w, nil
}

// Start starts the command; Wait waits for it.
func (c *Cmd) Start(ctx context.Context) error {
	if c.conn != nil {
		return errors.New("microsandbox: command already started")
	}
	req, err := c.request()
	if err != nil {
		return err
	}
	conn, err := c.sb.c.dialWS(ctx, sandboxPath(c.sb.Name(), "/exec/ws"))
	if err != nil {
		return err
	}
	conn.SetReadLimit(64 << 20)
	data, _ := json.Marshal(req)
	if err := conn.Write(ctx, websocket.MessageText, data); err != nil {
		// The agent may have refused the exec (sandbox not running) and closed before reading
		// the request: its error message is the answer.
		var refused control
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if rerr := readControl(rctx, conn, &refused); rerr != nil && errors.As(rerr, new(*Error)) {
			conn.CloseNow()
			return rerr
		}
		conn.CloseNow()
		return err
	}
	// The first message: started, or the error that kept it from starting.
	var first control
	if err := readControl(ctx, conn, &first); err != nil {
		conn.CloseNow()
		return err
	}
	if first.Type != "started" {
		conn.CloseNow()
		return fmt.Errorf("microsandbox: unexpected exec message %q", first.Type)
	}
	c.conn, c.pid, c.done = conn, first.Pid, make(chan struct{})
	go c.sendStdin()
	go c.receive()
	return nil
}

func readControl(ctx context.Context, conn *websocket.Conn, out *control) error {
	typ, data, err := conn.Read(ctx)
	if err != nil {
		return fmt.Errorf("microsandbox: exec connection: %w", err)
	}
	if typ != websocket.MessageText {
		return errors.New("microsandbox: exec sent data before it started")
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("microsandbox: bad exec message: %w", err)
	}
	if out.Type == "error" && out.Error != nil {
		return out.Error
	}
	return nil
}

// Pid is the command's process id inside the sandbox, once started.
func (c *Cmd) Pid() int { return c.pid }

func (c *Cmd) sendStdin() {
	ctx := context.Background()
	if c.Stdin != nil {
		buf := make([]byte, stdinChunk)
		for {
			n, err := c.Stdin.Read(buf)
			if n > 0 {
				if c.conn.Write(ctx, websocket.MessageBinary, buf[:n]) != nil {
					return
				}
			}
			if err != nil {
				break
			}
		}
	}
	_ = c.conn.Write(ctx, websocket.MessageText, []byte(`{"type":"stdin_close"}`))
}

func (c *Cmd) receive() {
	defer close(c.done)
	ctx := context.Background()
	for {
		typ, data, err := c.conn.Read(ctx)
		if err != nil {
			c.waitErr = fmt.Errorf("microsandbox: exec connection closed before the process exited: %w", err)
			return
		}
		if typ == websocket.MessageBinary {
			if len(data) == 0 {
				continue
			}
			w := c.Stdout
			if data[0] == streamStderr {
				w = c.Stderr
			}
			if w != nil {
				_, _ = w.Write(data[1:])
			}
			continue
		}
		var m control
		if err := json.Unmarshal(data, &m); err != nil {
			c.waitErr = fmt.Errorf("microsandbox: bad exec message: %w", err)
			return
		}
		switch m.Type {
		case "exited":
			switch {
			case m.TimedOut:
				c.waitErr = &TimeoutError{}
			case m.Signal != nil:
				c.waitErr = &ExitError{ExitCode: m.ExitCode, Signal: *m.Signal}
			case m.ExitCode != 0:
				c.waitErr = &ExitError{ExitCode: m.ExitCode}
			}
			c.conn.Close(websocket.StatusNormalClosure, "")
			return
		case "error":
			if m.Error != nil {
				c.waitErr = m.Error
			} else {
				c.waitErr = errors.New("microsandbox: exec failed")
			}
			return
		}
	}
}

// Signal sends a signal (e.g. 15 for SIGTERM) to the started command.
func (c *Cmd) Signal(ctx context.Context, signal int) error {
	if c.conn == nil {
		return errors.New("microsandbox: command not started")
	}
	return c.conn.Write(ctx, websocket.MessageText, []byte(fmt.Sprintf(`{"type":"signal","signal":%d}`, signal)))
}

// Wait waits for the started command to exit: nil for status 0, *ExitError, *TimeoutError, or
// the error that broke the connection. ctx bounds only the wait (the command keeps running).
func (c *Cmd) Wait(ctx context.Context) error {
	if c.done == nil {
		return errors.New("microsandbox: command not started")
	}
	select {
	case <-c.done:
		return c.waitErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run starts the command and waits for it.
func (c *Cmd) Run(ctx context.Context) error {
	if err := c.Start(ctx); err != nil {
		return err
	}
	return c.Wait(ctx)
}

// Output runs the command and returns its stdout. An *ExitError carries the stderr; a
// *TimeoutError the output until the timeout.
func (c *Cmd) Output(ctx context.Context) ([]byte, error) {
	if c.Stdout != nil {
		return nil, errors.New("microsandbox: Stdout already set")
	}
	var out, errb bytes.Buffer
	c.Stdout = &out
	if c.Stderr == nil {
		c.Stderr = &errb
	}
	err := c.Run(ctx)
	var ee *ExitError
	var te *TimeoutError
	switch {
	case errors.As(err, &ee):
		ee.Stderr = errb.Bytes()
	case errors.As(err, &te):
		te.Stdout, te.Stderr = out.Bytes(), errb.Bytes()
	}
	return out.Bytes(), err
}

// CombinedOutput runs the command and returns stdout and stderr together.
func (c *Cmd) CombinedOutput(ctx context.Context) ([]byte, error) {
	if c.Stdout != nil || c.Stderr != nil {
		return nil, errors.New("microsandbox: Stdout or Stderr already set")
	}
	var b syncBuffer
	c.Stdout, c.Stderr = &b, &b
	err := c.Run(ctx)
	var te *TimeoutError
	if errors.As(err, &te) {
		te.Stdout = b.Bytes()
	}
	return b.Bytes(), err
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Bytes()
}

// dialWS opens a WebSocket to path on the agent, authenticated like every call.
func (c *Client) dialWS(ctx context.Context, path string) (*websocket.Conn, error) {
	header := http.Header{}
	if c.token != "" {
		header.Set(c.tokenHeader, "Bearer "+c.token)
	}
	// http://localhost (unix socket), http://host:port, https://apiserver/...: the same
	// scheme over WebSocket.
	url := "ws" + strings.TrimPrefix(c.base, "http") + path
	conn, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: c.http, HTTPHeader: header})
	if err != nil {
		if resp != nil && resp.Body != nil {
			defer resp.Body.Close()
			data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			apiErr := &Error{Status: resp.StatusCode}
			if json.Unmarshal(data, apiErr) == nil && apiErr.Code != "" {
				return nil, apiErr
			}
		}
		return nil, fmt.Errorf("%w at %s: %v", ErrAgentUnreachable, c.loc.Endpoint, err)
	}
	return conn, nil
}
