//! Command line, parsed by hand to keep the binary small.

use crate::listen::ListenAddr;
use microsandbox_wire::guest::{GuestMount, GUEST_SOCKET_DIR, GUEST_SOCKET_NAME};
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: microsandbox-guest [--listen unix:/path | vsock:PORT] [--init-mounts] [--mount SPEC]...

  --listen ADDR    where to serve the guest protocol (default unix:/.msb/run/agent.sock)
  --init-mounts    mount /proc, /sys, /dev, /dev/pts, ... (when PID 1 of a microVM)
  --mount SPEC     mount a volume at boot (microVM): virtiofs:TAG:ro|rw:/dest or tmpfs:MIB:/dest
  --help           show this help
  --version        show the version
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Args),
    Help,
    Version,
}

/// Options of a normal run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub listen: ListenAddr,
    pub init_mounts: bool,
    /// Volumes to mount at boot, in order.
    pub mounts: Vec<GuestMount>,
}

/// The listen address used without `--listen`.
pub fn default_listen() -> ListenAddr {
    ListenAddr::Unix(PathBuf::from(GUEST_SOCKET_DIR).join(GUEST_SOCKET_NAME))
}

/// Parse the arguments (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut out = Args {
        listen: default_listen(),
        init_mounts: false,
        mounts: Vec::new(),
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            "--init-mounts" => out.init_mounts = true,
            "--mount" => {
                let v = it.next().ok_or("--mount needs a value")?;
                out.mounts.push(GuestMount::parse(&v)?);
            }
            "--listen" => {
                let v = it.next().ok_or("--listen needs a value")?;
                out.listen = ListenAddr::parse(&v)?;
            }
            other => match other.strip_prefix("--listen=") {
                Some(v) => out.listen = ListenAddr::parse(v)?,
                None => return Err(format!("unknown argument: {other}")),
            },
        }
    }
    Ok(Command::Run(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults() {
        assert_eq!(
            p(&[]),
            Ok(Command::Run(Args {
                listen: ListenAddr::Unix("/.msb/run/agent.sock".into()),
                init_mounts: false,
                mounts: vec![],
            }))
        );
    }

    #[test]
    fn options() {
        assert_eq!(
            p(&["--listen", "vsock:7000", "--init-mounts"]),
            Ok(Command::Run(Args {
                listen: ListenAddr::Vsock(7000),
                init_mounts: true,
                mounts: vec![],
            }))
        );
        assert_eq!(
            p(&["--listen=unix:/x.sock"]),
            Ok(Command::Run(Args {
                listen: ListenAddr::Unix("/x.sock".into()),
                init_mounts: false,
                mounts: vec![],
            }))
        );
        assert_eq!(p(&["--help"]), Ok(Command::Help));
        assert_eq!(p(&["--version"]), Ok(Command::Version));
        assert!(p(&["--listen"]).is_err());
        assert!(p(&["--bogus"]).is_err());
        let Ok(Command::Run(a)) = p(&[
            "--mount",
            "virtiofs:msb0:ro:/data",
            "--mount",
            "tmpfs:16:/scratch",
        ]) else {
            panic!("mounts")
        };
        assert_eq!(
            a.mounts.iter().map(GuestMount::dest).collect::<Vec<_>>(),
            ["/data", "/scratch"]
        );
        assert!(p(&["--mount", "virtiofs:msb0:rw:relative"]).is_err());
        assert!(p(&["--mount"]).is_err());
    }
}
