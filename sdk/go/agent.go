package microsandbox

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Environment variables shared with the other SDKs.
const (
	EnvSocket       = "MSB_AGENT_SOCKET"
	EnvToken        = "MSB_AGENT_TOKEN"
	EnvStateDir     = "MSB_STATE_DIR"
	EnvAgentBin     = "MSB_AGENT_BIN"
	EnvStartTimeout = "MSB_AGENT_START_TIMEOUT"
	agentBinary     = "microsandbox-agent"
)

// Location is where the agent listens and how to authenticate.
type Location struct {
	// A unix socket path, or host:port for TCP.
	Endpoint  string
	Unix      bool
	Token     string
	TokenFile string
	// The state directory of an agent the SDK may start; empty for an explicit endpoint.
	StateDir string
}

// DefaultStateDir is the agent's default state directory for the current user.
func DefaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/microsandbox"
	}
	if x := os.Getenv("XDG_STATE_HOME"); x != "" {
		return filepath.Join(x, "microsandbox")
	}
	if h := os.Getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "state", "microsandbox")
	}
	return "/tmp/microsandbox"
}

// Locate says where the agent should be, from the environment.
func Locate() Location {
	token := os.Getenv(EnvToken)
	if s := os.Getenv(EnvSocket); s != "" {
		path := strings.TrimPrefix(strings.TrimPrefix(s, "unix://"), "unix:")
		if strings.HasPrefix(path, "/") || strings.HasPrefix(path, "./") || strings.HasPrefix(path, "../") {
			return Location{Endpoint: path, Unix: true, Token: token, TokenFile: filepath.Join(filepath.Dir(path), "agent.token")}
		}
		return Location{Endpoint: strings.TrimPrefix(s, "http://"), Token: token}
	}
	sd := os.Getenv(EnvStateDir)
	if sd == "" {
		sd = DefaultStateDir()
	}
	return Location{
		Endpoint:  filepath.Join(sd, "agent.sock"),
		Unix:      true,
		Token:     token,
		TokenFile: filepath.Join(sd, "agent.token"),
		StateDir:  sd,
	}
}

func (l Location) token() string {
	if l.Token != "" || l.TokenFile == "" {
		return l.Token
	}
	b, err := os.ReadFile(l.TokenFile)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (l Location) transport() *http.Transport {
	t := &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second}
	if l.Unix {
		path := l.Endpoint
		t.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
	}
	return t
}

// Connect returns a client of this machine's agent, starting the agent when none answers.
func Connect(ctx context.Context) (*Client, error) {
	loc := Locate()
	c := newClient(loc)
	if c.healthy(ctx) {
		return c, nil
	}
	if loc.StateDir == "" {
		return nil, fmt.Errorf("%w at %s (%s); start it, or unset %s to let the SDK start one",
			ErrAgentUnreachable, loc.Endpoint, EnvSocket, EnvSocket)
	}
	if _, err := StartAgent(ctx, loc.StateDir); err != nil {
		return nil, err
	}
	return newClient(loc), nil
}

// FindAgentBinary is the microsandbox-agent the SDK would start: MSB_AGENT_BIN, else beside
// this program, else on PATH.
func FindAgentBinary() (string, error) {
	if b := os.Getenv(EnvAgentBin); b != "" {
		if isExecutable(b) {
			return b, nil
		}
		return "", fmt.Errorf("microsandbox: %s=%s is not an executable file", EnvAgentBin, b)
	}
	if exe, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(exe), agentBinary); isExecutable(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath(agentBinary); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("microsandbox: no %s beside this program nor on PATH: install it, set %s, or start an agent and set %s / %s",
		agentBinary, EnvAgentBin, EnvStateDir, EnvSocket)
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// StartAgent starts an agent on state directory sd unless one answers there, and waits until
// it serves. Returns the new agent's pid (0: one was running). Serialised across processes by
// a lock file, as the other SDKs do.
func StartAgent(ctx context.Context, sd string) (int, error) {
	loc := Location{Endpoint: filepath.Join(sd, "agent.sock"), Unix: true, TokenFile: filepath.Join(sd, "agent.token"), StateDir: sd}
	if newClient(loc).healthy(ctx) {
		return 0, nil
	}
	bin, err := FindAgentBinary()
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(sd, 0o700); err != nil {
		return 0, fmt.Errorf("microsandbox: cannot create the agent state directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(sd, "agent.start.lock"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return 0, err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // released on close anyway
	if newClient(loc).healthy(ctx) {
		return 0, nil
	}
	logPath := filepath.Join(sd, "agent.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	defer logFile.Close()
	args := []string{"serve", "--state-dir", sd}
	if os.Getenv("MSB_HOST_ROOTS") == "" {
		// This user's agent on this user's machine: binds may read what the user can.
		args = append(args, "--local")
	}
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		// An empty MSB_HOST_ROOTS would read as a --host-root beside --local.
		if kv != "MSB_HOST_ROOTS=" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stderr = logFile
	// Its own session: it outlives this program and no terminal signal reaches it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("microsandbox: cannot start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	timeout := 30 * time.Second
	if s, err := strconv.ParseFloat(os.Getenv(EnvStartTimeout), 64); err == nil && s > 0 {
		timeout = time.Duration(s * float64(time.Second))
	}
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(loc.TokenFile); err == nil && newClient(loc).healthy(ctx) {
			return cmd.Process.Pid, nil
		}
		select {
		case err := <-exited:
			return 0, fmt.Errorf("%w: the agent (%s) exited while starting (%v); see %s", ErrAgentUnreachable, bin, err, logPath)
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%w: the agent (%s, pid %d) did not answer within %s; see %s",
				ErrAgentUnreachable, bin, cmd.Process.Pid, timeout, logPath)
		}
	}
}
