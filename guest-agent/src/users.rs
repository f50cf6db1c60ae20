//! Resolving a `user` spec (`name`, `uid`, `name:group`, `uid:gid`) against the sandbox's own
//! `/etc/passwd` and `/etc/group`, parsed by hand: the agent is statically linked, so there is no
//! NSS and `getpwnam` must not be used.

use std::fmt;

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The identity a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (always includes `gid`).
    pub groups: Vec<u32>,
    /// Home directory from the passwd entry, if the user has one.
    pub home: Option<String>,
    /// User name from the passwd entry, if the user has one.
    pub name: Option<String>,
}

/// Why a user spec could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserError {
    Empty,
    UnknownUser(String),
    UnknownGroup(String),
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserError::Empty => write!(f, "empty user spec"),
            UserError::UnknownUser(u) => write!(f, "unknown user: {u}"),
            UserError::UnknownGroup(g) => write!(f, "unknown group: {g}"),
        }
    }
}

/// Parse `/etc/passwd` text; malformed lines are skipped.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].trim().parse().ok()?,
                gid: f[3].trim().parse().ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

/// Parse `/etc/group` text; malformed lines are skipped.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolve `spec` (`user[:group]`, each part a name or a number) against parsed passwd/group.
///
/// Like runc: a numeric uid without a passwd entry is allowed (gid defaults to 0); a name must exist.
/// Supplementary groups are the groups listing the user as a member, plus the primary gid.
pub fn resolve(
    spec: &str,
    passwd: &[PasswdEntry],
    group: &[GroupEntry],
) -> Result<ResolvedUser, UserError> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(UserError::Empty);
    }
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user_part.is_empty() {
        return Err(UserError::Empty);
    }
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd.iter().find(|e| e.uid == uid),
        Err(_) => Some(
            passwd
                .iter()
                .find(|e| e.name == user_part)
                .ok_or_else(|| UserError::UnknownUser(user_part.to_string()))?,
        ),
    };
    let uid = match entry {
        Some(e) => e.uid,
        None => user_part.parse::<u32>().unwrap_or(0),
    };
    let gid = match group_part.filter(|g| !g.is_empty()) {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                group
                    .iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| UserError::UnknownGroup(g.to_string()))?
                    .gid
            }
        },
        None => entry.map(|e| e.gid).unwrap_or(0),
    };
    let mut groups = vec![gid];
    if let Some(e) = entry {
        for g in group {
            if g.members.iter().any(|m| m == &e.name) && !groups.contains(&g.gid) {
                groups.push(g.gid);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        groups,
        home: entry.map(|e| e.home.clone()).filter(|h| !h.is_empty()),
        name: entry.map(|e| e.name.clone()),
    })
}

/// Resolve `spec` against the sandbox's `/etc/passwd` and `/etc/group` (missing files are empty).
pub fn resolve_from_system(spec: &str) -> Result<ResolvedUser, UserError> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    resolve(spec, &parse_passwd(&passwd), &parse_group(&group))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken line
app:x:1000:1000:App User,,,:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
";
    const GROUP: &str = "\
root:x:0:
wheel:x:10:app,root
docker:x:999:app
app:x:1000:
nogroup:x:65534:
";

    fn r(spec: &str) -> Result<ResolvedUser, UserError> {
        resolve(spec, &parse_passwd(PASSWD), &parse_group(GROUP))
    }

    #[test]
    fn parses_passwd_skipping_junk() {
        let p = parse_passwd(PASSWD);
        assert_eq!(p.len(), 4);
        assert_eq!(p[2].name, "app");
        assert_eq!(p[2].uid, 1000);
        assert_eq!(p[2].home, "/home/app");
    }

    #[test]
    fn parses_group_members() {
        let g = parse_group(GROUP);
        assert_eq!(g[1].members, vec!["app", "root"]);
        assert!(g[0].members.is_empty());
    }

    #[test]
    fn resolves_name_with_supplementary_groups() {
        let u = r("app").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.groups, vec![1000, 10, 999]);
        assert_eq!(u.home.as_deref(), Some("/home/app"));
    }

    #[test]
    fn resolves_numeric_forms() {
        let u = r("1000").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.name.as_deref(), Some("app"));
        let u = r("4242").unwrap();
        assert_eq!((u.uid, u.gid, u.groups.clone()), (4242, 0, vec![0]));
        assert_eq!(u.home, None);
        let u = r("4242:77").unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (4242, 77, vec![77]));
    }

    #[test]
    fn resolves_group_names() {
        let u = r("app:docker").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 999));
        assert_eq!(u.groups, vec![999, 10]);
        let u = r("nobody:nogroup").unwrap();
        assert_eq!((u.uid, u.gid), (65534, 65534));
    }

    #[test]
    fn rejects_unknown_names() {
        assert_eq!(r("ghost"), Err(UserError::UnknownUser("ghost".into())));
        assert_eq!(
            r("app:ghosts"),
            Err(UserError::UnknownGroup("ghosts".into()))
        );
        assert_eq!(r(""), Err(UserError::Empty));
        assert_eq!(r(":5"), Err(UserError::Empty));
    }
}
