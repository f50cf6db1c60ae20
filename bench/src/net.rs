//! 6. Network: an HTTP download from a "public" host through a sandbox's policed link (veth,
//!    the agent's nftables chain under `public_only`, NAT in the uplink namespace) vs the same
//!    busybox `wget` of the same server on the host's loopback.
//!
//! The sandbox's uplink lives in a namespace this benchmark makes, whose only neighbour is
//! another of its namespaces holding the server (203.0.113.10): nothing reaches a real network.

use crate::baseline::Baseline;
use crate::harness::{cmd, Bench};
use crate::report::{Report, Row, Target};
use crate::Res;
use microsandbox_client::api::CreateSandbox;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Instant;

const SERVER: &str = "203.0.113.10";
const PORT: u16 = 8080;

/// The closed world: uplink namespace `U` -- veth -- server namespace `H`.
pub struct NetWorld {
    pub uplink: String,
    hosts: String,
}

fn ip(args: &[&str]) -> Res<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

impl NetWorld {
    pub fn new() -> Res<Self> {
        let id = std::process::id();
        let w = NetWorld {
            uplink: format!("msbb-u-{id}"),
            hosts: format!("msbb-h-{id}"),
        };
        let (u_if, h_if) = (format!("bu{id}"), format!("bh{id}"));
        ip(&["netns", "add", &w.uplink])?;
        ip(&["netns", "add", &w.hosts])?;
        ip(&[
            "-n", &w.uplink, "link", "add", &u_if, "type", "veth", "peer", "name", &h_if, "netns",
            &w.hosts,
        ])?;
        for (ns, dev, addr) in [
            (&w.uplink, &u_if, "192.0.2.1/24"),
            (&w.hosts, &h_if, "192.0.2.2/24"),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        ip(&[
            "-n",
            &w.hosts,
            "addr",
            "add",
            &format!("{SERVER}/32"),
            "dev",
            "lo",
        ])?;
        ip(&[
            "-n",
            &w.uplink,
            "route",
            "add",
            "default",
            "via",
            "192.0.2.2",
        ])?;
        Ok(w)
    }

    /// Agent arguments that put sandbox uplinks here.
    pub fn agent_args(&self) -> Vec<String> {
        vec![
            "--uplink-netns".into(),
            self.uplink.clone(),
            "--dns-upstream".into(),
            "127.0.0.1:53".into(),
        ]
    }
}

impl Drop for NetWorld {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.uplink])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.hosts])
            .output();
    }
}

/// An HTTP/1.0 server answering every request with `bytes` zero bytes, on a thread (inside
/// namespace `ns` when given). Returns once it listens.
fn serve(ns: Option<String>, addr: SocketAddr, bytes: u64) -> Res<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let listener = (|| -> Res<TcpListener> {
            if let Some(ns) = &ns {
                let f = std::fs::File::open(format!("/run/netns/{ns}"))?;
                nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
            }
            Ok(TcpListener::bind(addr)?)
        })();
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        };
        let _ = tx.send(listener.local_addr().map_err(|e| e.to_string()));
        let chunk = vec![0u8; 1 << 20];
        for conn in listener.incoming().flatten() {
            let chunk = chunk.clone();
            std::thread::spawn(move || {
                let mut c = conn;
                let mut req = [0u8; 2048];
                let _ = c.read(&mut req);
                let _ = write!(c, "HTTP/1.0 200 OK\r\nContent-Length: {bytes}\r\n\r\n");
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if c.write_all(&chunk[..n]).is_err() {
                        return;
                    }
                    left -= n as u64;
                }
            });
        }
    });
    Ok(rx.recv()??)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub async fn bench_net(
    b: &Bench,
    base: &Baseline,
    world: &NetWorld,
    mib: u64,
    reps: usize,
    rep: &mut Report,
) -> Res<()> {
    let bytes = mib << 20;
    serve(
        Some(world.hosts_ns()),
        SocketAddr::new(SERVER.parse()?, PORT),
        bytes,
    )?;
    let local = serve(None, "127.0.0.1:0".parse()?, bytes)?;
    let name = format!("{}net", crate::harness::NAME_PREFIX);
    let req: CreateSandbox = serde_json::from_value(json!({
        "name": name, "image": "busybox", "detached": true, "isolation": "container",
        "memory_mib": 128, "network": {"policy": "public_only"},
    }))?;
    b.create_with(req).await?;
    eprintln!("[net] wget of {mib} MiB through the sandbox's public_only link vs on the host's loopback, {reps} reps");
    let url = format!("http://{SERVER}:{PORT}/");
    let host_url = format!("http://{local}/");
    let busybox = base.busybox();
    let (mut ours, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        let out = b
            .client
            .exec(&name, cmd("wget", &["-q", "-O", "/dev/null", &url]))
            .await?;
        let secs = t.elapsed().as_secs_f64();
        if out.exit_code != 0 {
            return Err(format!("wget in the sandbox failed: {}", out.stderr_str()).into());
        }
        ours.push(bytes as f64 / 1e6 / secs);
        let t = Instant::now();
        let status = Command::new(&busybox)
            .args(["wget", "-q", "-O", "/dev/null", &host_url])
            .status()?;
        let secs = t.elapsed().as_secs_f64();
        if !status.success() {
            return Err("wget on the host failed".into());
        }
        direct.push(bytes as f64 / 1e6 / secs);
    }
    b.remove(&name).await?;
    rep.row(Row {
        section: 6,
        benchmark: format!("HTTP download {mib} MiB through public_only policy path"),
        unit: "MB/s",
        ours: median(ours.clone()),
        baseline: Some((
            median(direct.clone()),
            "same busybox wget on host loopback".into(),
        )),
        higher_is_better: true,
        target: Target::None,
    });
    rep.detail(
        "net_download_mb_s",
        json!({"policy_path": ours, "host_loopback": direct}),
    );
    Ok(())
}

impl NetWorld {
    fn hosts_ns(&self) -> String {
        self.hosts.clone()
    }
}
