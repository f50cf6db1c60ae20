package microsandbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	microsandbox "github.com/microsandbox/microsandbox/sdk/go"
)

// TestLocalMode runs the SDK against a real agent it starts itself (container sandboxes of the
// test registry's busybox; `make setup`, `make guest`, and MSB_AGENT_BIN / MSB_GUEST_AGENT as the
// Makefile exports them).
func TestLocalMode(t *testing.T) {
	bin := os.Getenv("MSB_AGENT_BIN")
	if bin == "" {
		bin = filepath.Join("..", "..", "target", "debug", "microsandbox-agent")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no agent binary at %s (set MSB_AGENT_BIN): %v", bin, err)
	}
	state := t.TempDir()
	t.Setenv(microsandbox.EnvStateDir, state)
	t.Setenv(microsandbox.EnvAgentBin, bin)
	t.Setenv(microsandbox.EnvSocket, "")
	// The agent the SDK starts is the user's own (--local): binds of any readable directory.
	t.Setenv("MSB_HOST_ROOTS", "")
	if os.Getenv("MSB_MIRRORS") == "" {
		mirror := os.Getenv("MSB_TEST_MIRROR")
		if mirror == "" {
			mirror = "docker.io=127.0.0.1:5000"
		}
		t.Setenv("MSB_MIRRORS", mirror)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pid, err := microsandbox.StartAgent(ctx, state)
	if err != nil || pid == 0 {
		t.Fatalf("start agent: pid %d, %v", pid, err)
	}
	defer syscall.Kill(pid, syscall.SIGTERM) //nolint:errcheck

	c, err := microsandbox.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "in.txt"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateVolume(ctx, "go-vol", 16); err != nil {
		t.Fatal(err)
	}
	sb, err := c.Create(ctx, "go-sdk",
		microsandbox.Image("busybox"), microsandbox.Memory(128), microsandbox.Isolation("container"),
		microsandbox.Env("GREETING", "hello"), microsandbox.Workdir("/tmp"),
		microsandbox.Bind(host, "/host", true), microsandbox.NamedVolume("go-vol", "/data", false),
		microsandbox.Tmpfs("/scratch", 8))
	if err != nil {
		t.Fatal(err)
	}
	if sb.Info().State != "running" {
		t.Fatalf("state %q", sb.Info().State)
	}
	if _, err := c.Create(ctx, "go-sdk", microsandbox.Image("busybox")); !errors.Is(err, microsandbox.ErrSandboxAlreadyExists) {
		t.Fatalf("duplicate: %v", err)
	}

	// Output, environment, working directory, mounts.
	out, err := sb.Command("sh", "-c", "echo $GREETING $EXTRA; pwd; cat /host/in.txt").Output(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cmd := sb.Command("sh", "-c", "echo $EXTRA; pwd")
	cmd.Env, cmd.Dir = []string{"EXTRA=x"}, "/scratch"
	if got, err := cmd.Output(ctx); err != nil || string(got) != "x\n/scratch\n" {
		t.Fatalf("env/dir: %q %v", got, err)
	}
	if string(out) != "hello\n/tmp\nfrom the host\n" {
		t.Fatalf("output %q", out)
	}
	if err := sb.Command("touch", "/host/x").Run(ctx); err == nil {
		t.Fatal("a read-only bind was written")
	}

	// Many quick commands in a row: each one's status arrives (the agent once ended the relay
	// when the guest stopped taking input, before the exit status got through).
	for i := 0; i < 100; i++ {
		if err := sb.Command("true").Run(ctx); err != nil {
			t.Fatalf("quick command %d: %v", i, err)
		}
	}

	// Typed errors.
	_, err = sb.Command("sh", "-c", "echo oops >&2; exit 3").Output(ctx)
	var exitErr *microsandbox.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode != 3 || string(exitErr.Stderr) != "oops\n" {
		t.Fatalf("exit error: %v", err)
	}
	if err := sb.Command("no-such-program").Run(ctx); !errors.Is(err, microsandbox.ErrCommandNotFound) {
		t.Fatalf("missing program: %v", err)
	}
	slow := sb.Command("sh", "-c", "echo partial; sleep 30")
	slow.Timeout = 500 * time.Millisecond
	_, err = slow.Output(ctx)
	var timeout *microsandbox.TimeoutError
	if !errors.As(err, &timeout) || string(timeout.Stdout) != "partial\n" {
		t.Fatalf("timeout: %v", err)
	}

	// Stdin from an io.Reader and through a pipe; stdout to an io.Writer as it comes.
	cat := sb.Command("cat")
	cat.Stdin = strings.NewReader("\x00bytes")
	if got, err := cat.Output(ctx); err != nil || string(got) != "\x00bytes" {
		t.Fatalf("stdin: %q %v", got, err)
	}
	piped := sb.Command("sh", "-c", "read line; echo got $line")
	w, _ := piped.StdinPipe()
	var buf bytes.Buffer
	piped.Stdout = &buf
	if err := piped.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if piped.Pid() <= 0 {
		t.Fatal("no pid")
	}
	io.WriteString(w, "typed\n") //nolint:errcheck
	w.Close()
	if err := piped.Wait(ctx); err != nil || buf.String() != "got typed\n" {
		t.Fatalf("pipe: %q %v", buf.String(), err)
	}

	// Files.
	if err := sb.MkdirAll(ctx, "/tmp/d/e"); err != nil {
		t.Fatal(err)
	}
	if n, err := sb.WriteFile(ctx, "/tmp/d/e/f.txt", strings.NewReader("content")); err != nil || n != 7 {
		t.Fatalf("write: %d %v", n, err)
	}
	if got, err := sb.ReadFile(ctx, "/tmp/d/e/f.txt"); err != nil || string(got) != "content" {
		t.Fatalf("read: %q %v", got, err)
	}
	if st, err := sb.Stat(ctx, "/tmp/d/e/f.txt"); err != nil || st.Size != 7 {
		t.Fatalf("stat: %+v %v", st, err)
	}
	if err := sb.Copy(ctx, "/tmp/d/e/f.txt", "/tmp/d/g.txt"); err != nil {
		t.Fatal(err)
	}
	if err := sb.Rename(ctx, "/tmp/d/g.txt", "/tmp/d/h.txt"); err != nil {
		t.Fatal(err)
	}
	entries, err := sb.ReadDir(ctx, "/tmp/d")
	if err != nil || len(entries) != 2 {
		t.Fatalf("list: %+v %v", entries, err)
	}
	if err := sb.RemoveAll(ctx, "/tmp/d"); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Stat(ctx, "/tmp/d"); !errors.Is(err, microsandbox.ErrPathNotFound) {
		t.Fatalf("stat after remove: %v", err)
	}

	// Metrics, listing, stop (still listed), start again, remove.
	if _, err := sb.WriteFile(ctx, "/tmp/kept", strings.NewReader("before the stop")); err != nil {
		t.Fatal(err)
	}
	if m, err := sb.Metrics(ctx); err != nil || m.MemoryBytes == 0 {
		t.Fatalf("metrics: %+v %v", m, err)
	}
	list, err := c.List(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "go-sdk" {
		t.Fatalf("list: %+v %v", list, err)
	}
	if info, err := sb.Stop(ctx, time.Second); err != nil || info.State != "stopped" {
		t.Fatalf("stop: %+v %v", info, err)
	}
	if again, err := c.Get(ctx, "go-sdk"); err != nil || again.Info().State != "stopped" {
		t.Fatalf("get after stop: %v", err)
	}
	if err := sb.Command("true").Run(ctx); !errors.Is(err, microsandbox.ErrSandboxNotRunning) {
		t.Fatalf("exec after stop: %v", err)
	}
	// Started again: its files as the stop left them.
	if info, err := sb.Start(ctx); err != nil || info.State != "running" {
		t.Fatalf("start again: %+v %v", info, err)
	}
	if kept, err := sb.ReadFile(ctx, "/tmp/kept"); err != nil || string(kept) != "before the stop" {
		t.Fatalf("file after start: %q %v", kept, err)
	}
	if _, err := sb.Logs(ctx, 0); err != nil {
		t.Fatalf("logs: %v", err)
	}
	// Paused: commands refused; resumed: running again.
	if info, err := sb.Pause(ctx); err != nil || info.State != "paused" {
		t.Fatalf("pause: %+v %v", info, err)
	}
	if err := sb.Command("true").Run(ctx); !errors.Is(err, microsandbox.ErrSandboxNotRunning) {
		t.Fatalf("exec while paused: %v", err)
	}
	if info, err := sb.Resume(ctx); err != nil || info.State != "running" {
		t.Fatalf("resume: %+v %v", info, err)
	}
	if err := sb.Command("true").Run(ctx); err != nil {
		t.Fatalf("exec after resume: %v", err)
	}
	if err := sb.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "go-sdk"); !errors.Is(err, microsandbox.ErrSandboxNotFound) {
		t.Fatalf("get after remove: %v", err)
	}
	if err := c.RemoveVolume(ctx, "go-vol"); err != nil {
		t.Fatal(err)
	}

	// Code run: a Python program on the python image.
	py, err := c.Create(ctx, "go-sdk-py", microsandbox.Image("python"), microsandbox.Isolation("container"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := py.Command("python3", "-c", "import sys; print(6 * 7, sys.version_info[0])").Output(ctx); err != nil || string(out) != "42 3\n" {
		t.Fatalf("python: %q %v", out, err)
	}
	if err := py.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	poolAndSnapshot(ctx, t, c)
}

// poolAndSnapshot: a create that names a warm pool (with the pool's template) takes a started
// sandbox and gets its own env; the pool refills; a paused sandbox's files become a snapshot that
// new sandboxes start from.
func poolAndSnapshot(ctx context.Context, t *testing.T, c *microsandbox.Client) {
	template := []microsandbox.Option{
		microsandbox.Image("busybox"), microsandbox.Isolation("container"), microsandbox.Memory(64),
	}
	if _, err := c.CreatePool(ctx, "go-pool", 1, template...); err != nil {
		t.Fatal(err)
	}
	ready := func(want uint32) {
		deadline := time.Now().Add(time.Minute)
		for {
			pools, err := c.Pools(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(pools) == 1 && pools[0].Ready == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("pool not ready: %+v", pools)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	ready(1)
	opts := append(template, microsandbox.FromPool("go-pool"), microsandbox.Env("WHO", "go"), microsandbox.Detached())
	sb, err := c.Create(ctx, "go-claimed", opts...)
	if err != nil {
		t.Fatal(err)
	}
	if launch := sb.Info().Labels["microsandbox.dev/launch"]; launch != "warm" {
		t.Fatalf("launch %q, want warm", launch)
	}
	if out, err := sb.Command("sh", "-c", "echo $WHO; hostname").Output(ctx); err != nil || string(out) != "go\ngo-claimed\n" {
		t.Fatalf("claimed sandbox: %q %v", out, err)
	}
	ready(1) // refilled
	if pools, _ := c.Pools(ctx); pools[0].Claimed != 1 {
		t.Fatalf("claimed count: %+v", pools)
	}

	if err := sb.Command("sh", "-c", "echo kept > /tmp/snap").Run(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	snap, err := sb.Snapshot(ctx, "go-snap")
	if err != nil {
		t.Fatal(err)
	}
	from, err := c.Create(ctx, "go-from-snap", microsandbox.Image(snap.Image), microsandbox.Isolation("container"), microsandbox.Detached())
	if err != nil {
		t.Fatal(err)
	}
	if kept, err := from.ReadFile(ctx, "/tmp/snap"); err != nil || string(kept) != "kept\n" {
		t.Fatalf("file of the snapshot: %q %v", kept, err)
	}
	if err := c.RemoveSnapshot(ctx, "go-snap"); !errors.Is(err, microsandbox.ErrSnapshotInUse) {
		t.Fatalf("remove a snapshot in use: %v", err)
	}
	for _, s := range []*microsandbox.Sandbox{from, sb} {
		if err := s.Remove(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if snaps, err := c.Snapshots(ctx); err != nil || len(snaps) != 1 || snaps[0].Name != "go-snap" {
		t.Fatalf("snapshots: %+v %v", snaps, err)
	}
	reference := fmt.Sprintf("127.0.0.1:5000/msb-test/go-snap:%d", os.Getpid())
	pushed, err := c.PushSnapshot(ctx, "go-snap", reference)
	if err != nil || pushed.Reference != reference || !strings.HasPrefix(pushed.Digest, "sha256:") {
		t.Fatalf("push: %+v %v", pushed, err)
	}
	if err := c.RemoveSnapshot(ctx, "go-snap"); err != nil {
		t.Fatal(err)
	}
	pulled, err := c.Create(ctx, "go-pulled", microsandbox.Image(reference), microsandbox.Isolation("container"), microsandbox.Detached())
	if err != nil {
		t.Fatal(err)
	}
	if kept, err := pulled.ReadFile(ctx, "/tmp/snap"); err != nil || string(kept) != "kept\n" {
		t.Fatalf("file of the pushed snapshot: %q %v", kept, err)
	}
	if err := pulled.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.RemovePool(ctx, "go-pool"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemovePool(ctx, "go-pool"); !errors.Is(err, microsandbox.ErrPoolNotFound) {
		t.Fatalf("remove a pool twice: %v", err)
	}
}
