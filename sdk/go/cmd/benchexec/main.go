// Command benchexec measures the Go SDK's exec latency: exec("true") N times in one sandbox;
// prints "go p50_ms p99_ms create_ms stream_mib_s" (64 MiB of stdout streamed) (bench/sdks.sh compares every SDK against Rust's).
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	microsandbox "github.com/microsandbox/microsandbox/sdk/go"
)

func main() {
	n := 200
	if len(os.Args) > 1 {
		if v, err := strconv.Atoi(os.Args[1]); err == nil {
			n = v
		}
	}
	ctx := context.Background()
	c, err := microsandbox.Connect(ctx)
	if err != nil {
		fail(err)
	}
	create := func() *microsandbox.Sandbox {
		sb, err := c.Create(ctx, fmt.Sprintf("bench-go-%d", os.Getpid()),
			microsandbox.Image("busybox"), microsandbox.Memory(128), microsandbox.Isolation("container"))
		if err != nil {
			fail(err)
		}
		return sb
	}
	// Create -> first output: the median of creates sandboxes (one is noise).
	const creates = 7
	createTimes := make([]float64, 0, creates)
	for i := 0; i < creates; i++ {
		start := time.Now()
		tmp := create()
		if out, err := tmp.Command("echo", "hi").Output(ctx); err != nil || string(out) != "hi\n" {
			fail(fmt.Errorf("first exec: %q %v", out, err))
		}
		createTimes = append(createTimes, float64(time.Since(start).Microseconds())/1e3)
		if err := tmp.Remove(ctx); err != nil {
			fail(err)
		}
	}
	sort.Float64s(createTimes)
	createMs := createTimes[creates/2]
	sb := create()
	defer sb.Remove(ctx) //nolint:errcheck
	times := make([]float64, 0, n)
	for i := 0; i < n; i++ {
		t := time.Now()
		if err := sb.Command("true").Run(ctx); err != nil {
			fail(err)
		}
		times = append(times, float64(time.Since(t).Microseconds())/1e3)
	}
	sort.Float64s(times)
	p := func(q float64) float64 { return times[int(float64(len(times)-1)*q+0.5)] }
	t := time.Now()
	var counter countWriter
	big := sb.Command("head", "-c", "67108864", "/dev/zero")
	big.Stdout = &counter
	if err := big.Run(ctx); err != nil || counter != 64<<20 {
		fail(fmt.Errorf("stream: %d bytes, %v", counter, err))
	}
	mibS := 64 / time.Since(t).Seconds()
	fmt.Printf("go %.3f %.3f %.1f %.0f\n", p(0.5), p(0.99), createMs, mibS)
}

type countWriter int

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "benchexec:", err)
	os.Exit(1)
}
