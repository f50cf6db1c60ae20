//! Baselines with plain `crun`: bundles built from `crun spec`'s default config over a copy of the
//! same busybox rootfs the sandboxes use, run under a crun root of their own.

use crate::harness::{Bench, BASELINE_CGROUP_PARENT};
use crate::Res;
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Baseline {
    /// Copy of the sandbox rootfs (also holds the static busybox used by host baselines).
    pub rootfs: PathBuf,
    root: PathBuf,
    dir: PathBuf,
    /// `crun spec` output, adjusted for every bundle.
    template: Value,
}

/// Runs `crun --root <root> args...`, failing with its stderr.
fn crun(root: &Path, args: &[&str]) -> Res<String> {
    let out = Command::new("crun")
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("crun {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "crun {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Baseline {
    /// Copies `rootfs` (`cp -a`) into the scratch directory and reads `crun spec`'s default config.
    pub fn prepare(bench: &Bench, rootfs: &Path) -> Res<Self> {
        let dir = bench.paths.scratch.join("crun");
        let copy = dir.join("rootfs");
        std::fs::create_dir_all(&dir)?;
        let status = Command::new("cp")
            .arg("-a")
            .arg(rootfs)
            .arg(&copy)
            .status()?;
        if !status.success() {
            return Err(format!("cp -a {} {} failed", rootfs.display(), copy.display()).into());
        }
        let spec_dir = dir.join("spec");
        std::fs::create_dir_all(&spec_dir)?;
        let out = Command::new("crun")
            .arg("spec")
            .current_dir(&spec_dir)
            .output()?;
        if !out.status.success() {
            return Err(format!("crun spec: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let template: Value =
            serde_json::from_slice(&std::fs::read(spec_dir.join("config.json"))?)?;
        let root = bench.paths.baseline_crun_root();
        std::fs::create_dir_all(&root)?;
        Ok(Self {
            rootfs: copy,
            root,
            dir,
            template,
        })
    }

    /// Writes bundle `name` running `args` (no terminal, absolute rootfs, plus a cgroup namespace
    /// and a cgroup path of our own so that its memory can be read) and returns its directory.
    pub fn bundle(&self, name: &str, args: &[&str]) -> Res<PathBuf> {
        let mut spec = self.template.clone();
        spec["process"]["args"] = json!(args);
        spec["process"]["terminal"] = json!(false);
        spec["root"]["path"] = json!(self.rootfs);
        spec["linux"]["cgroupsPath"] = json!(format!("/{BASELINE_CGROUP_PARENT}/{name}"));
        if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
            if !ns.iter().any(|n| n["type"] == "cgroup") {
                ns.push(json!({ "type": "cgroup" }));
            }
        }
        let bundle = self.dir.join(name);
        std::fs::create_dir_all(&bundle)?;
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&spec)?,
        )?;
        Ok(bundle)
    }

    /// `crun run` of `bundle` in the foreground; returns the time from spawning crun to the first
    /// byte of the container's stdout (checked to be `expect`).
    pub fn run_first_output(
        &self,
        bench: &Bench,
        bundle: &Path,
        id: &str,
        expect: &[u8],
    ) -> Res<Duration> {
        bench.track_crun(id);
        let start = Instant::now();
        let mut child = Command::new("crun")
            .arg("--root")
            .arg(&self.root)
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let mut buf = [0u8; 256];
        let n = stdout.read(&mut buf)?;
        let first = start.elapsed();
        let mut out = buf[..n].to_vec();
        stdout.read_to_end(&mut out)?;
        let result = child.wait_with_output()?;
        // `crun run` deletes the container when it exits; make sure.
        let _ = crun(&self.root, &["delete", "--force", id]);
        bench.untrack_crun(id);
        if !result.status.success() || out != expect {
            return Err(format!(
                "crun run {id}: {} stdout {:?} stderr {}",
                result.status,
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&result.stderr).trim()
            )
            .into());
        }
        Ok(first)
    }

    /// Starts `bundle` detached (`crun run --detach`).
    pub fn start_detached(&self, bench: &Bench, bundle: &Path, id: &str) -> Res<()> {
        bench.track_crun(id);
        // The container inherits crun's stdio: a pipe would stay open (and `output()` block) for
        // the container's whole life, so both go to a file.
        let log_path = bundle.join("crun.log");
        let log = std::fs::File::create(&log_path)?;
        let status = Command::new("crun")
            .arg("--root")
            .arg(&self.root)
            .args(["run", "--detach", "--bundle"])
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()?;
        if !status.success() {
            return Err(format!(
                "crun run --detach {id}: {status}: {}",
                std::fs::read_to_string(&log_path)
                    .unwrap_or_default()
                    .trim()
            )
            .into());
        }
        Ok(())
    }

    /// One `crun exec <id> args...` (collected, like the API's exec), timed from spawn to exit.
    pub fn exec(&self, id: &str, args: &[&str]) -> Res<Duration> {
        let start = Instant::now();
        let out = Command::new("crun")
            .arg("--root")
            .arg(&self.root)
            .arg("exec")
            .arg(id)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        let took = start.elapsed();
        if !out.status.success() {
            return Err(format!(
                "crun exec {id} {}: {} {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        Ok(took)
    }

    /// `crun delete --force`.
    pub fn delete(&self, bench: &Bench, id: &str) {
        let _ = crun(&self.root, &["delete", "--force", id]);
        bench.untrack_crun(id);
    }

    /// The static busybox of the rootfs, runnable on the host.
    pub fn busybox(&self) -> PathBuf {
        self.rootfs.join("bin/busybox")
    }
}
