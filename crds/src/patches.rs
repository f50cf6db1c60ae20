//! `spec.patches[]` of a Sandbox: changes to the root filesystem made before the sandbox boots.

use crate::common::{abs_path_rule, check_path, no_dotdot_rule, Checker};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

pub(crate) const ONE_OP_MSG: &str =
    "each patch needs exactly one of text, append, mkdir, symlink, remove or copy";
pub(crate) const MODE_MSG: &str =
    "mode must be an octal permission string such as '0644' or '0755'";
pub(crate) const REMOVE_ROOT_MSG: &str = "remove.path cannot be '/'";
const MODE_RE: &str = "^0?[0-7]{3}$";

/// One root filesystem change. Patches apply in order; exactly one operation per entry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.text) ? 1 : 0) + (has(self.append) ? 1 : 0) + (has(self.mkdir) ? 1 : 0) + (has(self.symlink) ? 1 : 0) + (has(self.remove) ? 1 : 0) + (has(self.copy) ? 1 : 0) == 1"
).message(ONE_OP_MSG))]
pub struct Patch {
    /// Write a file with the given content, replacing it if it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextPatch>,
    /// Append content to a file, creating it if needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append: Option<AppendPatch>,
    /// Create a directory and its parents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mkdir: Option<MkdirPatch>,
    /// Create a symbolic link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink: Option<SymlinkPatch>,
    /// Delete a file or directory tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<RemovePatch>,
    /// Copy a file or directory from the node (same allowed roots as bind mounts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyPatch>,
}

/// Write a whole file.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TextPatch {
    /// Absolute path of the file in the sandbox.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = abs_path_rule("text.path"))]
    #[x_kube(validation = no_dotdot_rule("text.path"))]
    pub path: String,
    /// File content (UTF-8, at most 64 KiB; larger files belong in the image or a Volume).
    #[schemars(length(max = 65536))]
    pub content: String,
    /// Permission bits as an octal string, e.g. `0644` (the default) or `0755`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4))]
    #[x_kube(validation = Rule::new(format!("self.matches('{MODE_RE}')")).message(MODE_MSG))]
    pub mode: Option<String>,
}

/// Append to a file.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AppendPatch {
    /// Absolute path of the file in the sandbox.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = abs_path_rule("append.path"))]
    #[x_kube(validation = no_dotdot_rule("append.path"))]
    pub path: String,
    /// Text appended to the file (at most 64 KiB).
    #[schemars(length(max = 65536))]
    pub content: String,
}

/// Create a directory.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MkdirPatch {
    /// Absolute path of the directory in the sandbox.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = abs_path_rule("mkdir.path"))]
    #[x_kube(validation = no_dotdot_rule("mkdir.path"))]
    pub path: String,
    /// Permission bits as an octal string, e.g. `0755` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4))]
    #[x_kube(validation = Rule::new(format!("self.matches('{MODE_RE}')")).message(MODE_MSG))]
    pub mode: Option<String>,
}

/// Create a symbolic link at `path` pointing to `target`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SymlinkPatch {
    /// Absolute path of the link in the sandbox.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = abs_path_rule("symlink.path"))]
    #[x_kube(validation = no_dotdot_rule("symlink.path"))]
    pub path: String,
    /// What the link points to (stored as given; may be relative).
    #[schemars(length(min = 1, max = 1024))]
    pub target: String,
}

/// Delete a path.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RemovePatch {
    /// Absolute path to delete (recursively for directories). Missing paths are not an error.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = abs_path_rule("remove.path"))]
    #[x_kube(validation = no_dotdot_rule("remove.path"))]
    #[x_kube(validation = Rule::new("self != '/'").message(REMOVE_ROOT_MSG))]
    pub path: String,
}

/// Copy from the node into the sandbox.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CopyPatch {
    /// Absolute path of a file or directory on the node.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = abs_path_rule("copy.hostPath"))]
    #[x_kube(validation = no_dotdot_rule("copy.hostPath"))]
    pub host_path: String,
    /// Absolute destination path in the sandbox.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = abs_path_rule("copy.path"))]
    #[x_kube(validation = no_dotdot_rule("copy.path"))]
    pub path: String,
}

/// Parse an octal mode string (`"0644"`, `"755"`) into permission bits.
pub fn parse_mode(mode: &str) -> Option<u32> {
    let digits = mode
        .strip_prefix('0')
        .filter(|d| d.len() == 3)
        .unwrap_or(mode);
    (digits.len() == 3 && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)))
        .then(|| u32::from_str_radix(digits, 8).ok())
        .flatten()
}

impl Patch {
    /// The Rust mirror of this type's CEL rules; `field` is e.g. `spec.patches[0]`.
    pub(crate) fn check(&self, c: &mut Checker, field: &str) {
        let ops = [
            self.text.is_some(),
            self.append.is_some(),
            self.mkdir.is_some(),
            self.symlink.is_some(),
            self.remove.is_some(),
            self.copy.is_some(),
        ];
        c.check(ops.iter().filter(|o| **o).count() == 1, field, ONE_OP_MSG);
        let mut path = |op: &str, key: &str, value: &str| {
            let what = format!("{op}.{key}");
            check_path(c, value, &format!("{field}.{what}"), &what);
        };
        if let Some(p) = &self.text {
            path("text", "path", &p.path);
        }
        if let Some(p) = &self.append {
            path("append", "path", &p.path);
        }
        if let Some(p) = &self.mkdir {
            path("mkdir", "path", &p.path);
        }
        if let Some(p) = &self.symlink {
            path("symlink", "path", &p.path);
        }
        if let Some(p) = &self.remove {
            path("remove", "path", &p.path);
        }
        if let Some(p) = &self.copy {
            path("copy", "hostPath", &p.host_path);
            path("copy", "path", &p.path);
        }
        if let Some(p) = &self.remove {
            c.check(
                p.path != "/",
                &format!("{field}.remove.path"),
                REMOVE_ROOT_MSG,
            );
        }
        let modes = [
            ("text", self.text.as_ref().and_then(|p| p.mode.as_deref())),
            ("mkdir", self.mkdir.as_ref().and_then(|p| p.mode.as_deref())),
        ];
        for (op, mode) in modes {
            if let Some(m) = mode {
                c.check(
                    parse_mode(m).is_some(),
                    &format!("{field}.{op}.mode"),
                    MODE_MSG,
                );
            }
        }
    }
}

fn octal(mode: Option<&String>) -> Option<u32> {
    mode.and_then(|m| u32::from_str_radix(m, 8).ok())
}

impl Patch {
    /// The node-agent's form of this patch (`None` for an entry without an operation, which
    /// validation rejects).
    pub fn to_agent(&self) -> Option<microsandbox_wire::api::RootPatch> {
        use base64::Engine as _;
        use microsandbox_wire::api::RootPatch as R;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        if let Some(t) = &self.text {
            return Some(R::Text {
                path: t.path.clone(),
                content_b64: b64(&t.content),
                mode: octal(t.mode.as_ref()),
            });
        }
        if let Some(a) = &self.append {
            return Some(R::Append {
                path: a.path.clone(),
                content_b64: b64(&a.content),
            });
        }
        if let Some(m) = &self.mkdir {
            return Some(R::Mkdir {
                path: m.path.clone(),
                mode: octal(m.mode.as_ref()),
            });
        }
        if let Some(l) = &self.symlink {
            return Some(R::Symlink {
                path: l.path.clone(),
                target: l.target.clone(),
            });
        }
        if let Some(r) = &self.remove {
            return Some(R::Remove {
                path: r.path.clone(),
            });
        }
        self.copy.as_ref().map(|c| R::Copy {
            src: c.host_path.clone(),
            path: c.path.clone(),
            mode: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644"), Some(0o644));
        assert_eq!(parse_mode("755"), Some(0o755));
        assert_eq!(parse_mode("0000"), Some(0));
        for bad in ["", "0", "644 ", "0844", "01755", "rwx", "0o644", "00644"] {
            assert_eq!(parse_mode(bad), None, "{bad:?}");
        }
    }
}
