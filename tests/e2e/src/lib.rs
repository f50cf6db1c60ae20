//! Harness of the cluster e2e tests and benchmark: a real kube-apiserver + etcd (started by
//! `tests/e2e/run.sh`, found through `KUBECONFIG` and `MSB_K8S_DIR`), the operator and node-agents
//! as host processes (there is no kubelet here), kubectl and kube-rs to drive them.
//!
//! Every test gets its own namespaces (`<name>` for its objects, `<name>-system` for its node
//! Leases) and its own operator and node-agents restricted to them, so tests never see each
//! other's objects and may run in parallel on one control plane.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::Client;
use microsandbox_client::AgentClient;
use microsandbox_crds::{Sandbox, Volume};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/e2e is two levels below the root")
        .to_path_buf()
}

/// Directory of the workspace binaries of the running profile (`target/debug` or `.../release`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MSB_E2E_BIN_DIR") {
        return d.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("profile dir")
    } else {
        dir
    };
    dir.to_path_buf()
}

pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} missing: build it first (tests/e2e/run.sh does)",
        p.display()
    );
    p
}

/// The static guest agent (`make guest`).
pub fn guest_agent() -> PathBuf {
    let p = std::env::var_os("MSB_GUEST_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace().join("target/x86_64-unknown-linux-gnu/release/microsandbox-guest")
        });
    assert!(
        p.is_file(),
        "guest agent {} missing: run `make guest`",
        p.display()
    );
    p
}

/// Poll object `name` of `api` until `pred` holds; panics with its last state after `timeout`.
pub async fn wait_object<K, F>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: F,
) -> K
where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
        + k8s_openapi::serde::Serialize,
    F: Fn(&K) -> bool,
{
    let start = Instant::now();
    loop {
        let got = api.get_opt(name).await.expect("get");
        if let Some(o) = &got {
            if pred(o) {
                return o.clone();
            }
        }
        assert!(
            start.elapsed() < timeout,
            "{name}: not {what} after {timeout:?}; last: {}",
            serde_json::to_string_pretty(&got).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a Sandbox's Ready condition is True.
pub fn is_ready(s: &Sandbox) -> bool {
    s.status.as_ref().is_some_and(|st| {
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

pub use microsandbox_testkit::{slope, Footprint};

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A child process killed on drop; restartable with the same command line.
pub struct Proc {
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

/// The log filter of the operator (RUST_LOG) and node-agents (MSB_LOG): MSB_E2E_RUST_LOG, or info.
fn e2e_log_filter() -> String {
    std::env::var("MSB_E2E_RUST_LOG").unwrap_or_else(|_| "info".into())
}

impl Proc {
    pub fn start(
        program: PathBuf,
        args: Vec<String>,
        envs: Vec<(String, String)>,
        log: PathBuf,
    ) -> Self {
        let mut p = Self {
            program,
            args,
            envs,
            log,
            child: None,
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            // MSB_E2E_RUST_LOG: more detail in the operator's and agents' logs when hunting a bug.
            .env("RUST_LOG", e2e_log_filter())
            .env("MSB_LOG", e2e_log_filter())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown code runs, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A test's slice of the cluster.
pub struct Cluster {
    pub client: Client,
    /// Namespace of the test's objects.
    pub ns: String,
    /// Namespace of its node Leases (the operator's namespace).
    pub system_ns: String,
    /// Where processes keep state and logs.
    pub dir: PathBuf,
    /// Kubeconfigs holding tokens of the chart's ServiceAccounts: the operator and the
    /// node-agents run with exactly the chart's RBAC, never as admin.
    pub operator_kubeconfig: PathBuf,
    pub agent_kubeconfig: PathBuf,
}

static NETNS_COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A network namespace with only a loopback interface, deleted on drop.
pub struct ClosedNetns {
    pub name: String,
}

impl ClosedNetns {
    pub fn new(name: &str) -> Self {
        let made = Self {
            name: name.to_string(),
        };
        let _ = output("ip", &["netns", "del", name], None);
        run("ip", &["netns", "add", name], None);
        run("ip", &["-n", name, "link", "set", "lo", "up"], None);
        made
    }
}

impl Drop for ClosedNetns {
    fn drop(&mut self) {
        let _ = output("ip", &["netns", "del", &self.name], None);
    }
}

impl Cluster {
    /// Fresh namespaces `<name>-<pid>` and `<name>-<pid>-system`; the first allows
    /// `isolation: container` (the only isolation this machine can run).
    pub async fn new(name: &str) -> Self {
        assert!(
            std::env::var_os("KUBECONFIG").is_some(),
            "KUBECONFIG is not set: run the e2e suite with tests/e2e/run.sh"
        );
        let client = Client::try_default().await.expect("kube client");
        let ns = format!("{name}-{}", std::process::id());
        let system_ns = format!("{ns}-system");
        let api: Api<Namespace> = Api::all(client.clone());
        for (n, allow) in [(&ns, true), (&system_ns, false)] {
            let mut obj: Namespace = serde_json::from_value(serde_json::json!({
                "metadata": {"name": n}
            }))
            .expect("namespace");
            if allow {
                obj.metadata.labels = Some(
                    [(
                        "microsandbox.dev/allow-container-isolation".to_string(),
                        "true".to_string(),
                    )]
                    .into(),
                );
            }
            api.create(&PostParams::default(), &obj)
                .await
                .unwrap_or_else(|e| panic!("create namespace {n}: {e}"));
        }
        let dir = workspace().join("target/e2e-state").join(&ns);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("state dir");
        let (operator_kubeconfig, agent_kubeconfig) = install_chart_rbac(&ns, &system_ns, &dir);
        Self {
            client,
            ns,
            system_ns,
            dir,
            operator_kubeconfig,
            agent_kubeconfig,
        }
    }

    pub fn sandboxes(&self) -> Api<Sandbox> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn volumes(&self) -> Api<Volume> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The operator, restricted to this test's namespaces, without leader election.
    pub fn operator(&self, extra: &[&str]) -> Proc {
        let mut args = vec!["--no-leader-election"];
        args.extend_from_slice(extra);
        self.operator_replica(&args)
    }

    /// One operator replica (leader election on unless `extra` turns it off).
    pub fn operator_replica(&self, extra: &[&str]) -> Proc {
        let mut args: Vec<String> = vec![
            "--namespace".into(),
            self.system_ns.clone(),
            "--watch-namespace".into(),
            self.ns.clone(),
            "--metrics-addr".into(),
            format!("127.0.0.1:{}", free_port()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Proc::start(
            binary("microsandbox-operator"),
            args,
            vec![(
                "KUBECONFIG".into(),
                self.operator_kubeconfig.display().to_string(),
            )],
            self.dir.join("operator.log"),
        )
    }

    /// A node-agent in cluster mode as node `node`.
    pub fn agent(&self, node: &str, extra: &[&str]) -> Agent {
        self.spawn_agent(node, "127.0.0.1", None, extra)
    }

    /// A node-agent as node `node` that also runs "in" pod `agent-<node>` of the system
    /// namespace: a Pod object (no kubelet here) whose `status.podIP` is `addr`, where the agent
    /// listens, so the API server's pod proxy reaches it like a DaemonSet pod's.
    pub fn agent_in_pod(&self, node: &str, addr: &PodAddress, extra: &[&str]) -> Agent {
        let pod = format!("agent-{node}");
        let sa = format!("{}-node-agent", chart_fullname(&self.ns));
        self.apply_in(&self.system_ns, &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: {}\nspec:\n  serviceAccountName: {sa}\n  automountServiceAccountToken: false\n  nodeName: {node}\n  containers: [{{name: agent, image: microsandbox/node-agent}}]\n",
            self.system_ns
        ));
        let status = format!(
            "{{\"status\":{{\"phase\":\"Running\",\"podIP\":\"{0}\",\"podIPs\":[{{\"ip\":\"{0}\"}}]}}}}",
            addr.ip
        );
        let (ok, _, err) = self.kubectl(
            &[
                "patch",
                "pod",
                &pod,
                "-n",
                &self.system_ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status,
            ],
            None,
        );
        assert!(ok, "pod status: {err}");
        self.spawn_agent(node, &addr.ip, Some(&pod), extra)
    }

    fn spawn_agent(&self, node: &str, ip: &str, pod: Option<&str>, extra: &[&str]) -> Agent {
        let state = self.dir.join(node);
        std::fs::create_dir_all(&state).expect("agent state");
        // One image cache for all tests: pulls happen once per run.
        let images = workspace().join("target/e2e-state/images");
        std::fs::create_dir_all(&images).expect("images dir");
        let link = state.join("images");
        if !link.exists() {
            std::os::unix::fs::symlink(&images, &link).expect("images link");
        }
        let port = free_port();
        let endpoint = format!("http://{ip}:{port}");
        // Where this agent puts sandbox uplinks: a namespace of its own with no route anywhere,
        // so a sandbox with a network policy (the CRD's default is public_only) reaches nothing.
        let uplink = ClosedNetns::new(&format!(
            "msb-e2e-{}-{}",
            std::process::id(),
            NETNS_COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let mut args: Vec<String> = [
            "serve",
            "--state-dir",
            state.to_str().expect("utf-8 path"),
            "--guest-agent",
            guest_agent().to_str().expect("utf-8 path"),
            "--mirror",
            "docker.io=127.0.0.1:5000",
            "--node-name",
            node,
            "--listen",
            &format!("{ip}:{port}"),
            "--cluster",
            "--cluster-namespace",
            &self.system_ns,
            "--watch-namespace",
            &self.ns,
            "--advertise-endpoint",
            &endpoint,
            "--node-lease-secs",
            "6",
            "--uplink-netns",
            &uplink.name,
            "--dns-upstream",
            "127.0.0.1:53",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut env = vec![(
            "KUBECONFIG".into(),
            self.agent_kubeconfig.display().to_string(),
        )];
        if let Some(pod) = pod {
            env.push(("POD_NAME".into(), pod.to_string()));
        }
        let proc = Proc::start(
            binary("microsandbox-agent"),
            args,
            env,
            state.join("agent.log"),
        );
        Agent {
            proc,
            node: node.into(),
            state,
            endpoint,
            uplink,
        }
    }

    /// Run kubectl; returns (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let out = output("kubectl", args, stdin);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `kubectl apply -n <ns> -f -`, which must succeed.
    pub fn apply(&self, yaml: &str) {
        self.apply_in(&self.ns, yaml);
    }

    /// `kubectl apply -n <namespace> -f -`, which must succeed.
    pub fn apply_in(&self, namespace: &str, yaml: &str) {
        let (ok, out, err) = self.kubectl(&["apply", "-n", namespace, "-f", "-"], Some(yaml));
        assert!(ok, "kubectl apply failed: {out}{err}\n{yaml}");
    }

    /// Poll a Sandbox until `pred` holds; panics with its last state after `timeout`.
    pub async fn wait_sandbox(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Sandbox) -> bool,
    ) -> Sandbox {
        let api = self.sandboxes();
        let start = Instant::now();
        loop {
            let got = api.get_opt(name).await.expect("get sandbox");
            if let Some(s) = &got {
                if pred(s) {
                    return s.clone();
                }
            }
            if start.elapsed() > timeout {
                panic!(
                    "sandbox {name}: not {what} after {timeout:?}; last: {}",
                    got.map(|s| serde_json::to_string_pretty(&s.status).unwrap_or_default())
                        .unwrap_or_else(|| "gone".into())
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `sh -c script` in the Sandbox `name` (through the node-agent that runs it), which must
    /// exit 0; its stdout.
    pub async fn sh(&self, agent: &Agent, name: &str, script: &str) -> String {
        let s = self.sandboxes().get(name).await.expect("sandbox");
        let local = s
            .status
            .and_then(|st| st.agent)
            .map(|a| a.sandbox)
            .expect("status.agent.sandbox");
        let out = agent
            .client()
            .await
            .exec(
                &local,
                microsandbox_client::api::ExecRequest {
                    command: "sh".into(),
                    args: vec!["-c".into(), script.into()],
                    ..Default::default()
                },
            )
            .await
            .expect("exec");
        assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait until `n` Sandboxes are Ready, from a watch (a list every few hundred ms would itself
    /// cost the API server work proportional to the count: benchmarks would measure
    /// themselves); how long it took.
    pub async fn wait_all_ready(&self, n: usize, timeout: Duration) -> Duration {
        use futures::StreamExt;
        use kube::runtime::{watcher, WatchStreamExt};
        let start = Instant::now();
        let events =
            watcher::watcher(self.sandboxes(), watcher::Config::default()).applied_objects();
        futures::pin_mut!(events);
        let mut ready = std::collections::HashSet::new();
        while ready.len() < n {
            let left = timeout.saturating_sub(start.elapsed());
            let s = tokio::time::timeout(left, events.next())
                .await
                .unwrap_or_else(|_| panic!("{}/{n} Ready after {timeout:?}", ready.len()))
                .expect("watch ended")
                .expect("watch");
            let name = s.metadata.name.clone().unwrap_or_default();
            if is_ready(&s) {
                ready.insert(name);
            } else {
                ready.remove(&name);
            }
        }
        start.elapsed()
    }

    /// Wait until no Sandbox is left in the namespace.
    pub async fn wait_no_sandboxes(&self, timeout: Duration) {
        let api = self.sandboxes();
        let start = Instant::now();
        loop {
            // One object is enough to know: a full list per poll costs the API server work
            // proportional to the count (the scaling benchmark waits with this).
            let one = kube::api::ListParams::default().limit(1);
            if api.list(&one).await.expect("list").items.is_empty() {
                return;
            }
            if start.elapsed() > timeout {
                let left = api.list(&Default::default()).await.expect("list").items;
                let names: Vec<_> = left
                    .iter()
                    .map(|s| {
                        format!(
                            "{} finalizers={:?}",
                            s.metadata.name.clone().unwrap_or_default(),
                            s.metadata.finalizers
                        )
                    })
                    .collect();
                panic!("sandboxes left after {timeout:?}: {names:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reasons of the Events about one object.
    pub fn event_reasons(&self, name: &str) -> Vec<String> {
        let (_, out, _) = self.kubectl(
            &[
                "get",
                "events",
                "-n",
                &self.ns,
                "--field-selector",
                &format!("involvedObject.name={name}"),
                "-o",
                "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
            ],
            None,
        );
        out.lines().map(str::to_string).collect()
    }
}

/// Run `program` with `stdin` fed to it (or /dev/null); its output.
fn output(program: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e} (source the control plane env)"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect(program)
}

/// Run a command that must succeed; its stdout.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = output(program, args, stdin);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The chart's ServiceAccount name prefix for release `release` (templates/_helpers.tpl).
pub fn chart_fullname(release: &str) -> String {
    if release.contains("microsandbox") {
        release
            .chars()
            .take(50)
            .collect::<String>()
            .trim_end_matches('-')
            .to_string()
    } else {
        format!("{release}-microsandbox")
            .chars()
            .take(50)
            .collect::<String>()
            .trim_end_matches('-')
            .to_string()
    }
}

/// Render the chart's ServiceAccounts and RBAC as release `release` in `system_ns`, apply them,
/// and write kubeconfigs with tokens of the operator's and the node-agent's ServiceAccounts.
fn install_chart_rbac(release: &str, system_ns: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let chart = workspace().join("charts/microsandbox");
    let rendered = run(
        "helm",
        &[
            "template",
            release,
            chart.to_str().expect("utf-8"),
            "--namespace",
            system_ns,
            "--show-only",
            "templates/serviceaccounts.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ],
        None,
    );
    run("kubectl", &["apply", "-f", "-"], Some(&rendered));
    let full = chart_fullname(release);
    let kubeconfig = |component: &str| {
        token_kubeconfig(
            &format!("{full}-{component}"),
            system_ns,
            &dir.join(format!("{component}.kubeconfig")),
        )
    };
    (kubeconfig("operator"), kubeconfig("node-agent"))
}

/// Write a kubeconfig at `path` holding a fresh token of ServiceAccount `sa` of `namespace`.
pub fn token_kubeconfig(sa: &str, namespace: &str, path: &Path) -> PathBuf {
    let server = std::env::var("MSB_K8S_API_URL").expect("MSB_K8S_API_URL (control plane env)");
    let ca = Path::new(&std::env::var("MSB_K8S_DIR").expect("MSB_K8S_DIR")).join("certs/ca.crt");
    let token = run(
        "kubectl",
        &["create", "token", sa, "-n", namespace, "--duration=6h"],
        None,
    );
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: {sa}\n  user:\n    token: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: {sa}\n    namespace: {namespace}\ncurrent-context: c\n",
        ca.display(),
        token.trim()
    );
    std::fs::write(path, text).expect("kubeconfig");
    path.to_path_buf()
}

/// Regular files below `dir` (symlinks not followed) whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let hit = std::fs::read(e.path())
                    .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle));
                if hit {
                    found.push(e.path());
                }
            }
        }
    }
    found
}

/// YAML of a small busybox Sandbox with container isolation; `extra` is appended to `spec`
/// (indented by two spaces).
pub fn sandbox_yaml(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: microsandbox.dev/v1alpha1\nkind: Sandbox\nmetadata:\n  name: {name}\nspec:\n  image: busybox\n  isolation: container\n  resources:\n    memory: 64Mi\n{extra}"
    )
}

/// A "pod IP" for [`Cluster::agent_in_pod`]: an address in 198.18.0.0/15 (reserved for
/// benchmarks) on one end of a veth pair this test made, whose other end sits in a network
/// namespace of its own. The API server refuses to proxy to loopback and link-local addresses;
/// this one is neither, yet delivered locally: nothing reaches the machine's real network.
pub struct PodAddress {
    pub ip: String,
    link: String,
    netns: String,
}

impl PodAddress {
    pub fn new() -> Self {
        let pid = std::process::id();
        let link = format!("msbp{}", pid % 10_000_000);
        let peer = format!("msbq{}", pid % 10_000_000);
        let netns = format!("msb-e2e-{pid}");
        let ip = format!("198.18.{}.{}", (pid >> 8) & 0xff, (pid & 0xff).max(1));
        // Made before the links so that a failure half-way still removes what exists.
        let made = Self { ip, link, netns };
        let ip_cmd = |args: &[&str]| run("ip", args, None);
        ip_cmd(&[
            "link", "add", &made.link, "type", "veth", "peer", "name", &peer,
        ]);
        ip_cmd(&["netns", "add", &made.netns]);
        ip_cmd(&["link", "set", &peer, "netns", &made.netns]);
        ip_cmd(&["-n", &made.netns, "link", "set", &peer, "up"]);
        ip_cmd(&["addr", "add", &format!("{}/32", made.ip), "dev", &made.link]);
        ip_cmd(&["link", "set", &made.link, "up"]);
        made
    }
}

impl Default for PodAddress {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PodAddress {
    fn drop(&mut self) {
        let _ = output("ip", &["link", "del", &self.link], None);
        let _ = output("ip", &["netns", "del", &self.netns], None);
    }
}

/// A node-agent process and what the tests check about it.
pub struct Agent {
    pub proc: Proc,
    pub node: String,
    pub state: PathBuf,
    pub endpoint: String,
    /// Its sandboxes' uplink namespace (outlives restarts of the process).
    pub uplink: ClosedNetns,
}

impl Agent {
    /// Client of its API (TCP endpoint + token), once the token file exists.
    pub async fn client(&self) -> AgentClient {
        let token_path = self.state.join("agent.token");
        let start = Instant::now();
        while !token_path.is_file() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "agent {} wrote no token; log:\n{}",
                self.node,
                self.proc.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let token = std::fs::read_to_string(&token_path).expect("token");
        AgentClient::new(
            self.endpoint.parse().expect("endpoint"),
            Some(token.trim().to_string()),
        )
    }

    fn crun_root(&self) -> PathBuf {
        self.state.join("crun")
    }

    /// What a sandbox left on the host: crun containers, mounts below the state directory,
    /// cgroups and processes of `local` (the agent-side name). Empty when clean.
    pub fn leftovers(&self, local: &str) -> Vec<String> {
        let mut left = Vec::new();
        let id = format!("msb-{local}");
        // The agent names sandbox namespaces `msb<hash of its state dir>-<sandbox>`.
        if let Ok(dir) = std::fs::read_dir("/run/netns") {
            left.extend(
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("msb") && n.ends_with(&format!("-{local}")))
                    .map(|n| format!("network namespace {n}")),
            );
        }
        let links = output("ip", &["-n", &self.uplink.name, "-o", "link", "show"], None);
        left.extend(
            String::from_utf8_lossy(&links.stdout)
                .lines()
                .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
                .filter(|n| n.starts_with("msb"))
                .map(|n| format!("uplink interface {n}")),
        );
        let out = Command::new("crun")
            .arg("--root")
            .arg(self.crun_root())
            .args(["list", "-q"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        left.extend(
            out.lines()
                .filter(|l| l.trim() == id)
                .map(|l| format!("container {l}")),
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = self.state.join("sandboxes").join(local);
        let dir = dir.to_string_lossy();
        left.extend(
            mounts
                .lines()
                .filter(|l| l.contains(dir.as_ref()))
                .map(|l| format!("mount {l}")),
        );
        for root in [
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup/cpu,cpuacct",
            "/sys/fs/cgroup/unified",
        ] {
            let p = Path::new(root).join("microsandbox").join(&id);
            if p.exists() {
                left.push(format!("cgroup {}", p.display()));
            }
        }
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let cg = std::fs::read_to_string(p.path().join("cgroup")).unwrap_or_default();
                if cg.contains(&format!("/{id}")) {
                    let stat = std::fs::read_to_string(p.path().join("stat")).unwrap_or_default();
                    let fields: Vec<&str> = stat
                        .rsplit_once(')')
                        .map(|(_, rest)| rest.split_whitespace().collect())
                        .unwrap_or_default();
                    let (state, ppid) = (fields.first().copied(), fields.get(1).copied());
                    // A zombie holds nothing but its pid entry; collecting it is its parent's
                    // job. The agent's own children are checked; an init re-parented to the
                    // host's PID 1 after an agent crash is the host's (this machine's PID 1
                    // does not reap).
                    let agent_pid = self.proc.pid().map(|p| p.to_string());
                    if state == Some("Z") && ppid != agent_pid.as_deref() {
                        continue;
                    }
                    left.push(format!(
                        "process {} {stat}",
                        p.file_name().to_string_lossy()
                    ));
                }
            }
        }
        left
    }
}

impl Drop for Agent {
    /// Crash-stop the agent and remove whatever a failed test left running.
    fn drop(&mut self) {
        self.proc.kill9();
        let root = self.crun_root();
        let ids = Command::new("crun")
            .arg("--root")
            .arg(&root)
            .args(["list", "-q"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in ids.lines().filter(|l| !l.trim().is_empty()) {
            let _ = Command::new("crun")
                .arg("--root")
                .arg(&root)
                .args(["delete", "-f", id.trim()])
                .status();
        }
        // Network namespaces of the sandboxes it held (their records name them): the agent
        // that would remove them is gone.
        for record in std::fs::read_dir(self.state.join("sandboxes"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|d| std::fs::read(d.path().join("state.json")).ok())
            .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        {
            if let Some(netns) = record["network"]["netns"].as_str() {
                let _ = Command::new("ip").args(["netns", "del", netns]).status();
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let state = self.state.to_string_lossy().into_owned();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(state.as_str()))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for m in points {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
    }
}
