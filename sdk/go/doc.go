// Package microsandbox runs untrusted code in hardware-isolated microVM sandboxes on this
// machine, through its microsandbox node agent (local mode: the agent is found, or started when
// none runs, with the same rules and MSB_* variables as the Python and Rust SDKs).
//
// Commands follow os/exec: a Cmd has Stdin, Stdout, Stderr, Env and Dir, and Run, Output,
// CombinedOutput, Start and Wait. Every call takes a context.Context; files are io.Reader and
// io.Writer streams; errors match the agent's error codes with errors.Is (ErrSandboxNotFound,
// ErrCommandNotFound, ...) and errors.As (*Error, *ExitError, *TimeoutError).
//
//	c, err := microsandbox.Connect(ctx)
//	sb, err := c.Create(ctx, "my-sandbox", microsandbox.Image("python"), microsandbox.Memory(512))
//	defer sb.Remove(context.Background())
//	out, err := sb.Command("python", "-c", "print('Hello!')").Output(ctx)
package microsandbox
