//! File systems the guest agent mounts itself when it is PID 1 of a microVM (in a container the
//! runtime mounts them). The host passes them on the guest agent's command line, one
//! `--mount SPEC` each, in the order given (so a mount inside another comes after it):
//!
//! - `virtiofs:TAG:ro:/dest` or `virtiofs:TAG:rw:/dest`: the virtio-fs share `TAG` of the VM;
//!   read-only shares are also refused writes by the VMM (host side), `ro` here is defence in
//!   depth and gives the guest EROFS instead of EACCES.
//! - `tmpfs:SIZE_MIB:/dest`: memory-backed scratch space of at most `SIZE_MIB` MiB (and at most
//!   the VM's memory, which bounds it on the host).
//!
//! The destination comes last so it may contain `:`.

/// One mount of a microVM guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestMount {
    Virtiofs {
        tag: String,
        dest: String,
        readonly: bool,
    },
    Tmpfs {
        dest: String,
        size_mib: u32,
    },
}

/// Longest virtio-fs tag (`struct virtio_fs_config` has 36 bytes for it).
pub const VIRTIOFS_TAG_MAX: usize = 36;

impl GuestMount {
    /// The `--mount` value.
    pub fn to_arg(&self) -> String {
        match self {
            GuestMount::Virtiofs {
                tag,
                dest,
                readonly,
            } => format!(
                "virtiofs:{tag}:{}:{dest}",
                if *readonly { "ro" } else { "rw" }
            ),
            GuestMount::Tmpfs { dest, size_mib } => format!("tmpfs:{size_mib}:{dest}"),
        }
    }

    /// Parse a `--mount` value.
    pub fn parse(arg: &str) -> Result<GuestMount, String> {
        let bad =
            || format!("bad --mount {arg:?}: want virtiofs:TAG:ro|rw:/dest or tmpfs:MIB:/dest");
        let dest_ok = |d: &str| {
            d.starts_with('/') && d.len() > 1 && !d.split('/').any(|c| c == ".." || c == ".")
        };
        let (kind, rest) = arg.split_once(':').ok_or_else(bad)?;
        match kind {
            "virtiofs" => {
                let mut parts = rest.splitn(3, ':');
                let (tag, mode, dest) = (
                    parts.next().ok_or_else(bad)?,
                    parts.next().ok_or_else(bad)?,
                    parts.next().ok_or_else(bad)?,
                );
                let readonly = match mode {
                    "ro" => true,
                    "rw" => false,
                    _ => return Err(bad()),
                };
                if tag.is_empty() || tag.len() > VIRTIOFS_TAG_MAX || !dest_ok(dest) {
                    return Err(bad());
                }
                Ok(GuestMount::Virtiofs {
                    tag: tag.to_string(),
                    dest: dest.to_string(),
                    readonly,
                })
            }
            "tmpfs" => {
                let (size, dest) = rest.split_once(':').ok_or_else(bad)?;
                let size_mib: u32 = size.parse().map_err(|_| bad())?;
                if size_mib == 0 || !dest_ok(dest) {
                    return Err(bad());
                }
                Ok(GuestMount::Tmpfs {
                    dest: dest.to_string(),
                    size_mib,
                })
            }
            _ => Err(bad()),
        }
    }

    /// Where it is mounted.
    pub fn dest(&self) -> &str {
        match self {
            GuestMount::Virtiofs { dest, .. } | GuestMount::Tmpfs { dest, .. } => dest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        for m in [
            GuestMount::Virtiofs {
                tag: "msb0".into(),
                dest: "/data:with:colons".into(),
                readonly: true,
            },
            GuestMount::Virtiofs {
                tag: "msb1".into(),
                dest: "/work".into(),
                readonly: false,
            },
            GuestMount::Tmpfs {
                dest: "/scratch".into(),
                size_mib: 64,
            },
        ] {
            assert_eq!(GuestMount::parse(&m.to_arg()), Ok(m.clone()));
        }
        assert_eq!(
            GuestMount::parse("virtiofs:msb0:ro:/data")
                .unwrap()
                .to_arg(),
            "virtiofs:msb0:ro:/data"
        );
        for bad in [
            "",
            "virtiofs",
            "virtiofs:msb0:rw",
            "virtiofs::rw:/x",
            "virtiofs:msb0:maybe:/x",
            "virtiofs:msb0:rw:relative",
            "virtiofs:msb0:rw:/",
            "virtiofs:msb0:rw:/a/../etc",
            &format!("virtiofs:{}:rw:/x", "t".repeat(37)),
            "tmpfs:0:/x",
            "tmpfs:big:/x",
            "tmpfs:8:/a/./b",
            "nfs:server:/x",
        ] {
            assert!(GuestMount::parse(bad).is_err(), "{bad:?}");
        }
    }
}
