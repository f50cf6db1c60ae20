package microsandbox

import (
	"errors"
	"fmt"
	"testing"
)

func TestLocate(t *testing.T) {
	t.Setenv(EnvSocket, "/run/a/agent.sock")
	l := Locate()
	if !l.Unix || l.Endpoint != "/run/a/agent.sock" || l.TokenFile != "/run/a/agent.token" || l.StateDir != "" {
		t.Fatalf("explicit socket: %+v", l)
	}
	t.Setenv(EnvSocket, "127.0.0.1:7070")
	if l := Locate(); l.Unix || l.Endpoint != "127.0.0.1:7070" {
		t.Fatalf("tcp: %+v", l)
	}
	t.Setenv(EnvSocket, "")
	t.Setenv(EnvStateDir, "/s")
	if l := Locate(); l.Endpoint != "/s/agent.sock" || l.StateDir != "/s" {
		t.Fatalf("state dir: %+v", l)
	}
}

func TestErrorsMatchByCode(t *testing.T) {
	err := fmt.Errorf("wrapped: %w", &Error{Code: "sandbox_not_found", Message: "sandbox \"a\" not found"})
	if !errors.Is(err, ErrSandboxNotFound) || errors.Is(err, ErrCommandNotFound) {
		t.Fatal("errors.Is by code")
	}
	if !IsNotFound(err) {
		t.Fatal("IsNotFound")
	}
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Message != "sandbox \"a\" not found" {
		t.Fatal("errors.As")
	}
}
