//! The host side of sandbox networks: network namespaces, veth pairs and nftables, through
//! iproute2 and nft (the same tools an operator uses to inspect them), and sockets opened inside
//! the uplink namespace.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Output, Stdio};
use tokio::process::{Child, Command};

use super::plan::Addressing;

/// Where sandbox uplinks live: a named network namespace (`/run/netns/<name>`), or the agent's
/// own when `None`.
#[derive(Debug, Clone)]
pub struct Uplink {
    pub netns: Option<String>,
}

/// A failed host command, with what it printed.
fn failed(what: &str, out: &std::process::Output) -> io::Error {
    io::Error::other(format!(
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stderr).trim(),
        if out.status.success() {
            ""
        } else {
            " (failed)"
        }
    ))
}

/// Starts `cmd` in network namespace `netns` (`/run/netns/<name>`) when given.
///
/// The child is spawned by a short-lived thread that joined the namespace (a thread's network
/// namespace is its own, and children inherit it). Not `ip -n` / `ip netns exec`: those unshare a
/// mount namespace, copying the agent's whole mount table at every call (+3 ms per call with
/// 3,000 mounts). Not a `pre_exec` setns either: any `pre_exec` makes the standard library fork
/// instead of `posix_spawn`, copying the agent's page tables at every call.
async fn spawn_in(netns: Option<&str>, mut cmd: Command) -> io::Result<Child> {
    let Some(ns) = netns else {
        return cmd.spawn();
    };
    let runtime = tokio::runtime::Handle::current();
    in_namespace(ns.to_string(), move || {
        let _in_runtime = runtime.enter();
        cmd.spawn()
    })
    .await
}

/// Runs `f` on a fresh thread that joined network namespace `ns` (`/run/netns/<ns>`): not the
/// blocking pool, since the namespace switch must die with the thread. Sockets `f` opens and
/// processes it starts stay in that namespace.
async fn in_namespace<T: Send + 'static>(
    ns: String,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let file = std::fs::File::open(Path::new("/run/netns").join(&ns))
        .map_err(|e| io::Error::new(e.kind(), format!("network namespace {ns}: {e}")))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("msb-netns".into())
        .spawn(move || {
            let result = nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)
                .and_then(|()| f());
            let _receiver_gone = tx.send(result);
        })?;
    rx.await
        .map_err(|_| io::Error::other("netns thread panicked"))?
}

/// Sets `net.ipv6.conf.<interface>.disable_ipv6` in the calling thread's network namespace;
/// nothing to do on a kernel without IPv6.
fn disable_ipv6(interface: &str) -> io::Result<()> {
    let conf = Path::new("/proc/sys/net/ipv6/conf");
    if !conf.exists() {
        return Ok(());
    }
    let knob = conf.join(interface).join("disable_ipv6");
    std::fs::write(&knob, "1")
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", knob.display())))
}

/// Runs `program args` in `netns` and collects its output.
async fn output_in(netns: Option<&str>, program: &str, args: &[&str]) -> io::Result<Output> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    spawn_in(netns, cmd).await?.wait_with_output().await
}

async fn run(
    program: &str,
    netns: Option<&str>,
    args: &[&str],
    stdin: Option<&str>,
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = spawn_in(netns, cmd)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(&format!("{program} {}", args.join(" ")), &out))
    }
}

impl Uplink {
    /// `ip [-n uplink] args...`
    pub async fn ip(&self, args: &[&str]) -> io::Result<()> {
        run("ip", self.netns.as_deref(), args, None).await
    }

    /// Names of the interfaces of the uplink namespace.
    pub async fn link_names(&self) -> io::Result<Vec<String>> {
        let out = output_in(self.netns.as_deref(), "ip", &["-o", "link", "show"]).await?;
        if !out.status.success() {
            return Err(failed("ip link show", &out));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .filter(|n| !n.is_empty())
            .collect())
    }

    /// Names of the chains and sets of `table` (inet) in the uplink namespace.
    pub async fn table_objects(&self, table: &str) -> io::Result<Vec<String>> {
        let out = output_in(
            self.netns.as_deref(),
            "nft",
            &["list", "table", "inet", table],
        )
        .await?;
        if !out.status.success() {
            return Err(failed("nft list table", &out));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                match words.next() {
                    Some("chain" | "set") => words.next().map(String::from),
                    _ => None,
                }
            })
            .collect())
    }

    /// `nft -f -` with `script`, in the uplink namespace.
    pub async fn nft(&self, script: &str) -> io::Result<()> {
        run("nft", self.netns.as_deref(), &["-f", "-"], Some(script)).await
    }

    /// Sets `net.ipv4.ip_forward=1` in the uplink namespace (sandbox traffic is routed there).
    pub async fn enable_forwarding(&self) -> io::Result<()> {
        self.in_netns(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
            .await
    }

    /// Runs `f` on a thread that joined the uplink namespace (sockets it opens stay there).
    pub async fn in_netns<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        match self.netns.clone() {
            Some(ns) => in_namespace(ns, f).await,
            None => tokio::task::spawn_blocking(f)
                .await
                .map_err(io::Error::other)?,
        }
    }

    /// A TCP connection to `target` opened from the uplink namespace (where sandbox links are).
    pub async fn connect(&self, target: std::net::SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let s = self
            .in_netns(move || {
                let s = std::net::TcpStream::connect_timeout(
                    &target,
                    std::time::Duration::from_secs(10),
                )?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .await?;
        let s = tokio::net::TcpStream::from_std(s)?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    /// `ip -batch -` with `commands` (one `ip` argument list per line) in network namespace
    /// `netns`: one process for several commands.
    async fn ip_batch(netns: Option<&str>, commands: &[Vec<&str>]) -> io::Result<()> {
        let script: String = commands.iter().map(|c| c.join(" ") + "\n").collect();
        run("ip", netns, &["-batch", "-"], Some(&script)).await
    }

    /// Creates sandbox namespace `sandbox_ns` wired to the uplink by a veth pair: `eth0` with
    /// the sandbox address inside, the host interface with the gateway address outside.
    pub async fn plug(&self, sandbox_ns: &str, a: &Addressing) -> io::Result<()> {
        // A namespace of that name can only be a leftover of this agent (names carry its
        // prefix and the sandbox name it reserved).
        if std::path::Path::new("/run/netns").join(sandbox_ns).exists() {
            let _leftover = run("ip", None, &["netns", "del", sandbox_ns], None).await;
        }
        run("ip", None, &["netns", "add", sandbox_ns], None).await?;
        // No IPv6 on sandbox links (the forward chain drops it anyway): no link-local address,
        // neighbour discovery or multicast report for the host to handle, per sandbox. `lo`,
        // made with the namespace, keeps `::1`.
        in_namespace(sandbox_ns.to_string(), || disable_ipv6("default")).await?;
        let peer = format!("msbg{:x}", a.index);
        let gw = format!("{}/30", a.gateway);
        let sbx = format!("{}/30", a.sandbox);
        let gateway = a.gateway.to_string();
        self.ip(&[
            "link", "add", &a.host_if, "type", "veth", "peer", "name", &peer, "netns", sandbox_ns,
        ])
        .await?;
        Self::ip_batch(
            Some(sandbox_ns),
            &[
                vec!["link", "set", "lo", "up"],
                vec!["link", "set", &peer, "name", "eth0"],
                vec!["addr", "add", &sbx, "dev", "eth0"],
                vec!["link", "set", "eth0", "up"],
                vec!["route", "add", "default", "via", &gateway],
            ],
        )
        .await?;
        let host_if = a.host_if.clone();
        self.in_netns(move || disable_ipv6(&host_if)).await?;
        Self::ip_batch(
            self.netns.as_deref(),
            &[
                vec!["addr", "add", &gw, "dev", &a.host_if],
                vec!["link", "set", &a.host_if, "up"],
            ],
        )
        .await
    }

    /// Deletes network namespace `name` (its interfaces go with it, and their veth peers).
    pub async fn delete_namespace(name: &str) -> io::Result<()> {
        run("ip", None, &["netns", "del", name], None).await
    }

    /// Removes the veth pair and the sandbox namespace (each step tolerates what is gone).
    pub async fn unplug(&self, sandbox_ns: &str, a: &Addressing) {
        if let Err(e) = self.ip(&["link", "del", &a.host_if]).await {
            tracing::debug!(interface = %a.host_if, error = %e, "veth already gone");
        }
        if let Err(e) = run("ip", None, &["netns", "del", sandbox_ns], None).await {
            tracing::debug!(netns = %sandbox_ns, error = %e, "netns already gone");
        }
    }
}
