//! Bundles the node agent (`microsandbox-agent`) and the static guest agent
//! (`microsandbox-guest`, which the agent finds next to itself) into `python/microsandbox/bin/`,
//! so that `pip install ./sdk/python` gives a working local mode with nothing else to install.
//!
//! Why a build script: maturin has no hook to run commands before packaging, but it compiles the
//! crate first and only then collects the python sources (`python-source`) and the `include`
//! globs of pyproject.toml into the wheel, so files written here end up in the wheel. This works
//! for every way maturin is driven (`pip install`, `python -m build`, `maturin build`) without
//! a wrapper script. (`scripts/build-wheel.sh` does the same explicitly.)
//!
//! When: `MSB_SDK_BUNDLE=0` never, `MSB_SDK_BUNDLE=1` (any other value) always, unset only when
//! maturin drives the build (it sets `PYO3_BUILD_EXTENSION_MODULE` / `PYO3_ENVIRONMENT_SIGNATURE`),
//! so plain workspace builds (`cargo build/clippy/test --workspace`) never pay for it.
//! `scripts/dev-setup.sh` (`maturin develop`) sets `MSB_SDK_BUNDLE=0` to stay fast.
//!
//! How: nested `cargo build --release` runs of the two crates with their own target directory
//! (`<target>/bundle`, or `MSB_SDK_BUNDLE_TARGET_DIR`): the outer cargo holds the lock of its
//! target directory, so sharing it would deadlock. The guest is built static
//! (`-C target-feature=+crt-static`, explicit `--target`), as the guest VM/container needs.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run() {
        // Print the whole chain; a failed bundle build must fail the wheel (a wheel without
        // the agent would install "fine" and fail at the first Sandbox.create).
        eprintln!("error: bundling the agent binaries failed: {e}");
        eprintln!("(set MSB_SDK_BUNDLE=0 to build the SDK without bundled binaries)");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    println!("cargo:rerun-if-changed=build.rs");
    for var in [
        "MSB_SDK_BUNDLE",
        "MSB_SDK_BUNDLE_TARGET_DIR",
        "PYO3_BUILD_EXTENSION_MODULE",
        "PYO3_ENVIRONMENT_SIGNATURE",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let bundle = match env::var("MSB_SDK_BUNDLE").ok().as_deref() {
        Some("0") => false,
        Some(_) => true,
        None => {
            env::var_os("PYO3_BUILD_EXTENSION_MODULE").is_some()
                || env::var_os("PYO3_ENVIRONMENT_SIGNATURE").is_some()
        }
    };
    if !bundle {
        return Ok(());
    }

    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .and_then(Path::parent)
        .ok_or("sdk/python has no workspace root")?
        .to_path_buf();
    let bin_dir = manifest_dir.join("python/microsandbox/bin");
    // Rebuild when the bundled crates (or what they depend on) change, or the copies went away.
    for p in [
        "node-agent",
        "guest-agent",
        "wire",
        "client",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(p).display());
    }
    for b in ["microsandbox-agent", "microsandbox-guest"] {
        println!("cargo:rerun-if-changed={}", bin_dir.join(b).display());
    }

    let target_dir = match env::var_os("MSB_SDK_BUNDLE_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => outer_target_dir()?.join("bundle"),
    };
    let host = env::var("HOST")?;
    let target = env::var("TARGET")?;
    // The guest is always built for an explicit triple (crt-static must not reach build scripts
    // and proc macros); the agent only when cross-compiling.
    let guest_triple = target.clone();
    let agent_triple = (target != host).then(|| target.clone());

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = workspace.join("Cargo.toml");

    let mut agent = nested_cargo(&cargo, &manifest, &target_dir, "microsandbox-agent");
    if let Some(t) = &agent_triple {
        agent.args(["--target", t]);
    }
    status(agent, "microsandbox-agent")?;

    let mut guest = nested_cargo(&cargo, &manifest, &target_dir, "microsandbox-guest");
    guest
        .args(["--target", &guest_triple])
        .env("RUSTFLAGS", "-C target-feature=+crt-static");
    status(guest, "microsandbox-guest (static)")?;

    let agent_bin = match &agent_triple {
        Some(t) => target_dir.join(t).join("release/microsandbox-agent"),
        None => target_dir.join("release/microsandbox-agent"),
    };
    let guest_bin = target_dir
        .join(&guest_triple)
        .join("release/microsandbox-guest");
    fs::create_dir_all(&bin_dir)?;
    install(&agent_bin, &bin_dir.join("microsandbox-agent"))?;
    install(&guest_bin, &bin_dir.join("microsandbox-guest"))?;
    Ok(())
}

/// The outer build's target directory: `CARGO_TARGET_DIR`, else the ancestor of `OUT_DIR` that
/// holds cargo's `CACHEDIR.TAG` (`<target>/[<triple>/]<profile>/build/<pkg>/out`).
fn outer_target_dir() -> Res<PathBuf> {
    if let Some(d) = env::var_os("CARGO_TARGET_DIR") {
        let d = PathBuf::from(d);
        if d.is_absolute() {
            return Ok(d);
        }
    }
    let out = PathBuf::from(env::var("OUT_DIR")?);
    out.ancestors()
        .find(|a| a.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .or_else(|| out.ancestors().nth(4).map(Path::to_path_buf))
        .ok_or_else(|| format!("no target directory above {}", out.display()).into())
}

/// `cargo build --release -p <pkg>` with an environment cleaned of what the outer cargo set for
/// this build script (flags, profile, target, ...), keeping the jobserver (`CARGO_MAKEFLAGS`) so
/// the nested build shares the outer `-j` budget.
fn nested_cargo(cargo: &OsString, manifest: &Path, target_dir: &Path, pkg: &str) -> Command {
    let mut c = Command::new(cargo);
    c.arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .args(["-p", pkg]);
    for (k, _) in env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        let keep = matches!(k, "CARGO_HOME" | "CARGO_MAKEFLAGS" | "CARGO_NET_OFFLINE")
            || k.starts_with("CARGO_REGISTRIES_")
            || k.starts_with("CARGO_HTTP_")
            || k.starts_with("CARGO_NET_");
        let drop = (k.starts_with("CARGO_") && !keep)
            || k.starts_with("DEP_")
            || k.starts_with("PYO3_")
            || matches!(
                k,
                "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
                    | "RUSTC"
                    | "RUSTDOC"
                    | "RUSTC_LINKER"
                    | "RUSTC_WORKSPACE_WRAPPER"
            );
        if drop {
            c.env_remove(k);
        }
    }
    // Cargo parses a build script's stdout for directives: keep the nested cargo off it.
    c.stdout(Stdio::from(std::io::stderr()));
    c
}

fn status(mut c: Command, what: &str) -> Res<()> {
    let st = c
        .status()
        .map_err(|e| format!("running cargo for {what}: {e}"))?;
    if !st.success() {
        return Err(format!("cargo build of {what} failed ({st})").into());
    }
    Ok(())
}

/// Copies `from` to `to` (0755) through a temporary file and a rename, so a running agent
/// started from `to` is not disturbed ("text file busy").
fn install(from: &Path, to: &Path) -> Res<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = to.with_extension("tmp");
    fs::copy(from, &tmp).map_err(|e| format!("copying {}: {e}", from.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
    fs::rename(&tmp, to)?;
    Ok(())
}
