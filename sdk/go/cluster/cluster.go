// Package cluster is the Go SDK's cluster mode: sandboxes as Kubernetes Sandbox objects
// (microsandbox.dev/v1alpha1) of a cluster running the microsandbox operator, with client-go.
//
//	c, err := cluster.Connect(ctx, cluster.Options{Namespace: "jobs"})
//	sb, err := c.Create(ctx, "job-1", microsandbox.Image("python"))
//	out, err := sb.Command("python", "-c", "print(1)").Output(ctx)
//	err = c.Remove(ctx, "job-1")
//
// Create posts the object, watches it until Ready and deletes it again if that fails, times
// out or ctx ends. Exec, files and metrics then go to the node-agent named in the object's
// status, authenticated with the user's own bearer token (the agent checks it against RBAC:
// create on sandboxes/exec): directly (Options.Access "direct") or through the API server's
// pod proxy ("proxy"; needs get/create on pods/proxy in the microsandbox namespace); "auto"
// takes the direct route inside a pod, else the proxy when the agent offers it.
//
// The lifecycle belongs to the object: Remove deletes it (use it, not Sandbox.Remove).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	microsandbox "github.com/microsandbox/microsandbox/sdk/go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Access is how exec and files reach a sandbox's node-agent.
type Access string

const (
	AccessAuto   Access = "auto"
	AccessDirect Access = "direct"
	AccessProxy  Access = "proxy"
)

// Options say where Sandbox objects live. The zero value is kubectl's defaults.
type Options struct {
	// Kubeconfig path; default $KUBECONFIG, ~/.kube/config, then the pod's ServiceAccount.
	Kubeconfig string
	// Context of the kubeconfig; default its current one.
	Context string
	// Namespace of the objects; default the context's.
	Namespace string
	// ReadyTimeout bounds Create's wait for Ready (default 2 minutes).
	ReadyTimeout time.Duration
	// Access to the agents (default AccessAuto).
	Access Access
}

// Error is a cluster-mode failure; Kind is one of the Err* kinds below (errors.Is matches by
// kind), as in the Rust, Python and Node.js SDKs.
type Error struct {
	Kind    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Is matches another *Error by Kind.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Kind == e.Kind
}

// Kinds of cluster-mode failures, for errors.Is.
var (
	ErrConfig        = &Error{Kind: "config"}
	ErrForbidden     = &Error{Kind: "forbidden"}
	ErrAlreadyExists = &Error{Kind: "already_exists"}
	ErrNotFound      = &Error{Kind: "not_found"}
	ErrNotRunning    = &Error{Kind: "not_running"}
	ErrInvalid       = &Error{Kind: "invalid"}
	ErrUnschedulable = &Error{Kind: "unschedulable"}
	ErrFailed        = &Error{Kind: "failed"}
	ErrTimeout       = &Error{Kind: "timeout"}
	ErrAPI           = &Error{Kind: "api"}
)

func fail(kind *Error, format string, args ...any) error {
	return &Error{Kind: kind.Kind, Message: fmt.Sprintf(format, args...)}
}

// apiError classifies an API call's error by HTTP status.
func apiError(what string, err error) error {
	kind := ErrAPI
	switch {
	case apierrors.IsUnauthorized(err), apierrors.IsForbidden(err):
		kind = ErrForbidden
	case apierrors.IsNotFound(err):
		kind = ErrNotFound
	case apierrors.IsAlreadyExists(err), apierrors.IsConflict(err):
		kind = ErrAlreadyExists
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		kind = ErrInvalid
	}
	return fail(kind, "%s: %v", what, err)
}

var sandboxes = schema.GroupVersionResource{Group: "microsandbox.dev", Version: "v1alpha1", Resource: "sandboxes"}

// Cluster is a connection to one cluster and namespace. Safe for concurrent use.
type Cluster struct {
	opts      Options
	config    *rest.Config
	dynamic   dynamic.Interface
	namespace string
	token     string
	// proxyHTTP reaches agents through the API server (HTTP/1.1 only: WebSocket upgrades).
	proxyHTTP *http.Client
}

// Connect reads the kubeconfig (no request is made yet).
func Connect(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 2 * time.Minute
	}
	switch opts.Access {
	case "":
		opts.Access = AccessAuto
	case AccessAuto, AccessDirect, AccessProxy:
	default:
		return nil, fail(ErrConfig, "access must be auto, direct or proxy, not %q", opts.Access)
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if opts.Kubeconfig != "" {
		rules.ExplicitPath = opts.Kubeconfig
	}
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: opts.Context})
	config, err := loader.ClientConfig()
	if err != nil {
		return nil, fail(ErrConfig, "kubeconfig: %v", err)
	}
	namespace := opts.Namespace
	if namespace == "" {
		if namespace, _, err = loader.Namespace(); err != nil {
			return nil, fail(ErrConfig, "kubeconfig namespace: %v", err)
		}
	}
	token := config.BearerToken
	if token == "" && config.BearerTokenFile != "" {
		if b, err := os.ReadFile(config.BearerTokenFile); err == nil {
			token = strings.TrimSpace(string(b))
		}
	}
	dyn, err := dynamic.NewForConfig(config)
	if err != nil {
		return nil, fail(ErrConfig, "Kubernetes client: %v", err)
	}
	proxyHTTP, err := http1Client(config)
	if err != nil {
		return nil, fail(ErrConfig, "Kubernetes client: %v", err)
	}
	return &Cluster{opts: opts, config: config, dynamic: dyn, namespace: namespace, token: token,
		proxyHTTP: proxyHTTP}, nil
}

// http1Client speaks to the API server with the kubeconfig's TLS and credentials over
// HTTP/1.1, which WebSocket upgrades through the pod proxy need.
func http1Client(config *rest.Config) (*http.Client, error) {
	tlsConfig, err := rest.TLSConfigFor(config)
	if err != nil {
		return nil, err
	}
	if tlsConfig != nil {
		tlsConfig.NextProtos = []string{"http/1.1"}
	}
	base := &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: tlsConfig,
		ForceAttemptHTTP2: false, MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second}
	rt, err := rest.HTTPWrappersForConfig(config, base)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: rt}, nil
}

// Namespace is where its objects live.
func (c *Cluster) Namespace() string { return c.namespace }

func (c *Cluster) api() dynamic.ResourceInterface {
	return c.dynamic.Resource(sandboxes).Namespace(c.namespace)
}

// Create posts Sandbox object name (options as for a local sandbox; Bind is not supported)
// and waits until it is Ready. If that fails, times out or ctx ends, the object is deleted.
func (c *Cluster) Create(ctx context.Context, name string, opts ...microsandbox.Option) (*microsandbox.Sandbox, error) {
	object, err := microsandbox.SandboxObject(c.namespace, name, opts...)
	if err != nil {
		return nil, err
	}
	if _, err := c.api().Create(ctx, &unstructured.Unstructured{Object: object}, metav1.CreateOptions{}); err != nil {
		return nil, apiError("create Sandbox "+name, err)
	}
	sb, err := c.start(ctx, name)
	if err != nil {
		// Deleted even when ctx ended: this call made the object.
		delCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.api().Delete(delCtx, name, metav1.DeleteOptions{})
		return nil, err
	}
	return sb, nil
}

func (c *Cluster) start(ctx context.Context, name string) (*microsandbox.Sandbox, error) {
	ready, err := c.waitReady(ctx, name)
	if err != nil {
		return nil, err
	}
	return c.handle(ctx, ready)
}

// waitReady watches Sandbox name until it is Ready (the object), Failed, or the ready timeout
// (Unschedulable with the operator's reason when it said it cannot place it).
func (c *Cluster) waitReady(ctx context.Context, name string) (*unstructured.Unstructured, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.ReadyTimeout)
	defer cancel()
	var last *unstructured.Unstructured
	for {
		obj, err := c.api().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return nil, apiError("get Sandbox "+name, err)
		}
		last = obj
		switch o := outcome(obj.Object); o.state {
		case ready:
			return obj, nil
		case failed:
			return nil, fail(ErrFailed, "%s", o.why)
		}
		w, err := c.api().Watch(ctx, metav1.ListOptions{
			FieldSelector:   fields.OneTermEqualSelector("metadata.name", name).String(),
			ResourceVersion: obj.GetResourceVersion(),
		})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return nil, apiError("watch Sandbox "+name, err)
		}
		done, obj, err := watchUntilDecided(w)
		if err != nil {
			return nil, err
		}
		if done {
			return obj, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	if last != nil {
		if o := outcome(last.Object); o.state == waiting && o.why != "" {
			return nil, fail(ErrUnschedulable, "%s", o.why)
		}
	}
	return nil, fail(ErrTimeout, "Sandbox %s not Ready after %s", name, c.opts.ReadyTimeout)
}

// watchUntilDecided reads w until the object is Ready (true), Failed or deleted (error), or the
// watch ends (false: watch again).
func watchUntilDecided(w watch.Interface) (bool, *unstructured.Unstructured, error) {
	defer w.Stop()
	for ev := range w.ResultChan() {
		obj, ok := ev.Object.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		if ev.Type == watch.Deleted {
			return false, nil, fail(ErrNotFound, "Sandbox %s was deleted while starting", obj.GetName())
		}
		switch o := outcome(obj.Object); o.state {
		case ready:
			return true, obj, nil
		case failed:
			return false, nil, fail(ErrFailed, "%s", o.why)
		}
	}
	return false, nil, nil
}

// handle is a Sandbox handle on Ready object obj, through its node-agent.
func (c *Cluster) handle(ctx context.Context, obj *unstructured.Unstructured) (*microsandbox.Sandbox, error) {
	status, _, _ := unstructured.NestedMap(obj.Object, "status")
	target, _, _ := unstructured.NestedString(status, "agent", "sandbox")
	endpoint, _, _ := unstructured.NestedString(status, "agentEndpoint")
	proxy, _, _ := unstructured.NestedString(status, "agentProxy")
	if target == "" {
		return nil, fail(ErrNotRunning, "Sandbox %s has no running sandbox on a node yet", obj.GetName())
	}
	if c.token == "" {
		return nil, fail(ErrConfig, "this kubeconfig authenticates without a bearer token (client "+
			"certificates?), which node-agents cannot check; use a token, e.g. `kubectl create token <sa>`")
	}
	r, err := route(obj.GetName(), c.opts.Access, os.Getenv("KUBERNETES_SERVICE_HOST") != "", endpoint, proxy)
	if err != nil {
		return nil, err
	}
	var agent *microsandbox.Client
	if r.proxy {
		agent = microsandbox.NewRemoteClient(strings.TrimSuffix(c.config.Host, "/")+r.where, c.token, c.proxyHTTP, true)
	} else {
		agent = microsandbox.NewRemoteClient(r.where, c.token, http.DefaultClient, false)
	}
	return agent.Get(ctx, target)
}

type routeTo struct {
	proxy bool
	// An agent URL, or the API server path of its pod proxy.
	where string
}

// route picks how to reach the agent of Sandbox name that announces endpoint and proxy. Pure.
func route(name string, access Access, inPod bool, endpoint, proxy string) (routeTo, error) {
	if endpoint == "" && proxy == "" {
		return routeTo{}, fail(ErrNotRunning, "Sandbox %s has no running sandbox on a node yet", name)
	}
	if access == AccessAuto {
		access = AccessProxy
		if (inPod && endpoint != "") || proxy == "" {
			access = AccessDirect
		}
	}
	if access == AccessProxy {
		if proxy == "" {
			return routeTo{}, fail(ErrConfig, "the node-agent of Sandbox %s announces no API server "+
				"proxy path (status.agentProxy); it needs POD_NAME and --listen", name)
		}
		return routeTo{proxy: true, where: proxy}, nil
	}
	if endpoint == "" {
		return routeTo{}, fail(ErrConfig, "the node-agent of Sandbox %s announces no endpoint (status.agentEndpoint)", name)
	}
	return routeTo{where: endpoint}, nil
}

// Get is a handle on Sandbox object name (running on a node).
func (c *Cluster) Get(ctx context.Context, name string) (*microsandbox.Sandbox, error) {
	obj, err := c.api().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, apiError("get Sandbox "+name, err)
	}
	return c.handle(ctx, obj)
}

// List is what the agents report about the namespace's sandboxes that run on a node.
func (c *Cluster) List(ctx context.Context) ([]microsandbox.SandboxInfo, error) {
	list, err := c.api().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, apiError("list Sandboxes", err)
	}
	var out []microsandbox.SandboxInfo
	for i := range list.Items {
		sb, err := c.handle(ctx, &list.Items[i])
		if errors.Is(err, ErrNotRunning) || errors.Is(err, microsandbox.ErrSandboxNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, sb.Info())
	}
	return out, nil
}

// SetPaused sets Sandbox name's spec.paused and returns once its node-agent froze it (phase
// Paused) or thawed it (Ready again), or ctx ends.
func (c *Cluster) SetPaused(ctx context.Context, name string, paused bool) error {
	patch := fmt.Sprintf(`{"spec":{"paused":%t}}`, paused)
	if _, err := c.api().Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return apiError("pause Sandbox "+name, err)
	}
	want := "Running"
	if paused {
		want = "Paused"
	}
	for {
		obj, err := c.api().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return apiError("get Sandbox "+name, err)
		}
		phase, _, _ := unstructured.NestedString(obj.Object, "status", "phase")
		if phase == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fail(ErrTimeout, "Sandbox %s is %s, not %s", name, phase, want)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Remove deletes Sandbox object name and returns once it is gone (its node-agent removed the
// sandbox) or ctx ends. No error if it does not exist.
func (c *Cluster) Remove(ctx context.Context, name string) error {
	err := c.api().Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return apiError("delete Sandbox "+name, err)
	}
	for {
		if _, err := c.api().Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return nil
		} else if ctx.Err() != nil {
			return fail(ErrTimeout, "Sandbox %s still exists (finalizers: is its node-agent running?)", name)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}
