package microsandbox

import (
	"errors"
	"fmt"
)

// Error is an error the agent answered with: a stable Code (snake_case, e.g.
// "sandbox_not_found") and a human Message. Compare with errors.Is against the Err* values.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// HTTP status of the answer (0 for errors of a streaming exec).
	Status int `json:"-"`
}

func (e *Error) Error() string { return e.Message }

// Is matches another *Error by code, so errors.Is(err, ErrSandboxNotFound) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// The agent's error codes, as sentinels for errors.Is.
var (
	ErrInvalidRequest       = &Error{Code: "invalid_request"}
	ErrInvalidName          = &Error{Code: "invalid_name"}
	ErrUnauthorized         = &Error{Code: "unauthorized"}
	ErrForbidden            = &Error{Code: "forbidden"}
	ErrSandboxNotFound      = &Error{Code: "sandbox_not_found"}
	ErrSandboxAlreadyExists = &Error{Code: "sandbox_already_exists"}
	ErrSandboxNotRunning    = &Error{Code: "sandbox_not_running"}
	ErrSandboxDraining      = &Error{Code: "sandbox_draining"}
	ErrImageNotFound        = &Error{Code: "image_not_found"}
	ErrImagePullFailed      = &Error{Code: "image_pull_failed"}
	ErrPathNotFound         = &Error{Code: "path_not_found"}
	ErrCommandNotFound      = &Error{Code: "command_not_found"}
	ErrVolumeNotFound       = &Error{Code: "volume_not_found"}
	ErrVolumeAlreadyExists  = &Error{Code: "volume_already_exists"}
	ErrVolumeInUse          = &Error{Code: "volume_in_use"}
	ErrSnapshotInUse        = &Error{Code: "snapshot_in_use"}
	ErrPoolNotFound         = &Error{Code: "pool_not_found"}
	ErrIsolationUnavailable = &Error{Code: "isolation_unavailable"}
	ErrGuestBootFailed      = &Error{Code: "guest_boot_failed"}
	ErrNoSpace              = &Error{Code: "no_space"}
	ErrRuntime              = &Error{Code: "runtime_error"}
	ErrInternal             = &Error{Code: "internal"}
)

// ErrAgentUnreachable: no agent answers and none could be started.
var ErrAgentUnreachable = errors.New("microsandbox: no node agent answers")

// ExitError: a command ran and did not succeed (Cmd.Run, Cmd.Output).
type ExitError struct {
	ExitCode int
	// Signal that killed it, 0 if none.
	Signal int
	// What it wrote to stderr (Output collects it).
	Stderr []byte
}

func (e *ExitError) Error() string {
	if e.Signal != 0 {
		return fmt.Sprintf("microsandbox: command killed by signal %d", e.Signal)
	}
	return fmt.Sprintf("microsandbox: command exited with status %d", e.ExitCode)
}

// TimeoutError: a command ran past its Cmd.Timeout and was killed. Stdout and Stderr hold what
// it wrote until then (for Output and CombinedOutput; with your own writers, they got it).
type TimeoutError struct {
	Stdout, Stderr []byte
}

func (e *TimeoutError) Error() string {
	return "microsandbox: the command timed out and was killed"
}
