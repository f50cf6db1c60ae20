//! Pure parsers for the host files doctor reads (`/proc/cpuinfo`, `/proc/modules`,
//! `/proc/filesystems`, `/proc/self/mountinfo`, ...). No I/O here: everything is tested on
//! sample texts.

use std::path::PathBuf;

use serde::Serialize;

/// CPU virtualization support as `/proc/cpuinfo` advertises it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CpuVirt {
    /// Intel VT-x.
    pub vmx: bool,
    /// AMD-V.
    pub svm: bool,
    /// We are ourselves a guest of some hypervisor.
    pub hypervisor: bool,
}

/// The `flags` of the first CPU (x86; other architectures have no such flags and get all-false).
pub fn cpu_virt(cpuinfo: &str) -> CpuVirt {
    let Some(flags) = cpuinfo
        .lines()
        .find(|l| l.split(':').next().is_some_and(|k| k.trim() == "flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v)
    else {
        return CpuVirt::default();
    };
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    CpuVirt {
        vmx: has("vmx"),
        svm: has("svm"),
        hypervisor: has("hypervisor"),
    }
}

/// Module names from `/proc/modules` (first column).
pub fn modules(proc_modules: &str) -> Vec<String> {
    proc_modules
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// File system types the kernel knows, from `/proc/filesystems` (`nodev\toverlay`).
pub fn filesystems(proc_filesystems: &str) -> Vec<String> {
    proc_filesystems
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(str::to_string)
        .collect()
}

/// The `Seccomp:` mode from `/proc/self/status`; its presence means the kernel has seccomp.
pub fn seccomp_mode(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `crun --version` output: the version and whether crun was built with seccomp.
pub fn crun_version(output: &str) -> Option<(String, bool)> {
    let version = output
        .lines()
        .find_map(|l| l.strip_prefix("crun version "))?
        .trim()
        .to_string();
    let seccomp = output.split_whitespace().any(|w| w == "+SECCOMP");
    Some((version, seccomp))
}

/// How cgroups are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only cgroup v2, mounted at /sys/fs/cgroup.
    Unified,
    /// v1 controllers plus a v2 hierarchy (usually /sys/fs/cgroup/unified).
    Hybrid,
    /// Only v1 hierarchies.
    Legacy,
    /// No cgroup file system mounted.
    None,
}

/// A cgroup mount from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    /// `cgroup2`, or `cgroup` (v1).
    pub version: u8,
    /// v1 controllers bound to this hierarchy (`name=` hierarchies excluded).
    pub controllers: Vec<String>,
}

/// Mount options of v1 cgroup mounts that are not controllers.
const CGROUP_V1_FLAGS: &[&str] = &[
    "rw",
    "ro",
    "noprefix",
    "clone_children",
    "xattr",
    "cpuset_v2_mode",
    "favordynmods",
];

/// The cgroup mounts in `/proc/self/mountinfo`.
pub fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // `id parent maj:min root mount-point options [optional...] - fstype source super-options`
            let (left, right) = line.split_once(" - ")?;
            let mount_point = unescape_mount_path(left.split_whitespace().nth(4)?);
            let mut right = right.split_whitespace();
            let version = match right.next()? {
                "cgroup2" => 2,
                "cgroup" => 1,
                _ => return None,
            };
            let options = right.nth(1).unwrap_or("");
            let controllers = if version == 1 {
                options
                    .split(',')
                    .filter(|o| !o.contains('=') && !CGROUP_V1_FLAGS.contains(o))
                    .map(str::to_string)
                    .collect()
            } else {
                Vec::new()
            };
            Some(CgroupMount {
                mount_point: PathBuf::from(mount_point),
                version,
                controllers,
            })
        })
        .collect()
}

/// Classify the host's cgroup setup from its mounts.
pub fn cgroup_mode(mounts: &[CgroupMount]) -> CgroupMode {
    let v1 = mounts.iter().any(|m| m.version == 1);
    let v2 = mounts.iter().any(|m| m.version == 2);
    let v2_at_root = mounts
        .iter()
        .any(|m| m.version == 2 && m.mount_point == std::path::Path::new("/sys/fs/cgroup"));
    match (v1, v2) {
        _ if v2_at_root && !v1 => CgroupMode::Unified,
        (true, true) => CgroupMode::Hybrid,
        (true, false) => CgroupMode::Legacy,
        (false, true) => CgroupMode::Unified,
        (false, false) => CgroupMode::None,
    }
}

/// Controllers listed in a `cgroup.controllers` file.
pub fn controllers(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
pub(crate) fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our build machines: an AMD guest without svm, KVM provided by PVM.
    const CPUINFO_PVM: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n\
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext lm constant_tsc rep_good nopl cpuid pni ssse3 fma cx16 sse4_1 sse4_2 x2apic popcnt aes xsave avx hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a vmmcall fsgsbase bmi1 avx2 smep bmi2\n\
bugs\t\t: sysret_ss_attrs\n\nprocessor\t: 1\nflags\t\t: fpu hypervisor\n";
    const CPUINFO_INTEL: &str = "processor\t: 0\nflags\t\t: fpu vme vmx ept smx est\n";
    const CPUINFO_AMD: &str = "processor\t: 0\nflags\t\t: fpu svm npt lbrv\n";
    const CPUINFO_ARM: &str = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\n";

    #[test]
    fn cpu_flags() {
        assert_eq!(
            cpu_virt(CPUINFO_PVM),
            CpuVirt {
                vmx: false,
                svm: false,
                hypervisor: true
            }
        );
        assert_eq!(
            cpu_virt(CPUINFO_INTEL),
            CpuVirt {
                vmx: true,
                svm: false,
                hypervisor: false
            }
        );
        assert_eq!(
            cpu_virt(CPUINFO_AMD),
            CpuVirt {
                vmx: false,
                svm: true,
                hypervisor: false
            }
        );
        assert_eq!(cpu_virt(CPUINFO_ARM), CpuVirt::default());
        // "svm" as part of another flag ("vmmcall", "svm_lock") does not count.
        assert!(!cpu_virt("flags\t: svm_lock vmmcall\n").svm);
    }

    #[test]
    fn proc_modules_with_pvm() {
        let text = "kvm_pvm 98304 0 - Live 0x0000000000000000\n\
kvm 1327104 1 kvm_pvm, Live 0x0000000000000000\n\
overlay 200704 3 - Live 0x0000000000000000\n";
        let m = modules(text);
        assert_eq!(m, ["kvm_pvm", "kvm", "overlay"]);
        assert!(!m.iter().any(|x| x == "kvm_intel" || x == "kvm_amd"));
        assert!(modules("").is_empty());
    }

    #[test]
    fn proc_filesystems() {
        let text = "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay\nnodev\tcgroup2\n";
        let fs = filesystems(text);
        assert!(fs.iter().any(|f| f == "overlay"));
        assert!(fs.iter().any(|f| f == "ext4"));
        assert!(!filesystems("nodev\tsysfs\n").iter().any(|f| f == "overlay"));
    }

    #[test]
    fn seccomp_field() {
        assert_eq!(
            seccomp_mode("Name:\tx\nSeccomp:\t0\nSeccomp_filters:\t0\n"),
            Some(0)
        );
        assert_eq!(seccomp_mode("Seccomp:\t2\n"), Some(2));
        assert_eq!(seccomp_mode("Name:\tx\n"), None);
    }

    #[test]
    fn crun_version_output() {
        let out = "crun version 1.8.1\ncommit: f8a096be\nrundir: /run/crun\nspec: 1.0.0\n+SYSTEMD +SELINUX +APPARMOR +CAP +SECCOMP +EBPF +YAJL\n";
        assert_eq!(crun_version(out), Some(("1.8.1".to_string(), true)));
        assert_eq!(
            crun_version("crun version 1.14\n+CAP\n"),
            Some(("1.14".to_string(), false))
        );
        assert_eq!(crun_version("runc version 1.1"), None);
    }

    /// Our build machines: hybrid v1 with hugetlb left on the v2 hierarchy.
    const MOUNTINFO_HYBRID: &str = "\
22 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/a,upperdir=/b,workdir=/c
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const MOUNTINFO_V2: &str = "\
25 1 0:23 / / rw - ext4 /dev/sda1 rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
    const MOUNTINFO_V1: &str = "\
31 23 0:28 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct
33 31 0:30 / /sys/fs/cgroup/hugetlb rw - cgroup cgroup rw,hugetlb
";

    #[test]
    fn cgroup_modes() {
        let hybrid = cgroup_mounts(MOUNTINFO_HYBRID);
        assert_eq!(cgroup_mode(&hybrid), CgroupMode::Hybrid);
        assert_eq!(hybrid.len(), 6);
        let v2 = hybrid.iter().find(|m| m.version == 2).unwrap();
        assert_eq!(v2.mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(hybrid[0].controllers, ["cpu"]);
        assert!(hybrid
            .iter()
            .find(|m| m.mount_point.ends_with("systemd"))
            .unwrap()
            .controllers
            .is_empty());

        assert_eq!(
            cgroup_mode(&cgroup_mounts(MOUNTINFO_V2)),
            CgroupMode::Unified
        );
        let v1 = cgroup_mounts(MOUNTINFO_V1);
        assert_eq!(cgroup_mode(&v1), CgroupMode::Legacy);
        assert_eq!(v1[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(
            v1[0].mount_point,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(
            cgroup_mode(&cgroup_mounts("22 1 0:21 / / rw - ext4 /dev/sda rw\n")),
            CgroupMode::None
        );
    }

    #[test]
    fn cgroup_controllers_file() {
        assert_eq!(controllers("hugetlb\n"), ["hugetlb"]);
        assert!(controllers("\n").is_empty());
        assert_eq!(controllers("cpuset cpu io memory pids\n").len(), 5);
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(
            unescape_mount_path(r"/mnt/with\040space"),
            "/mnt/with space"
        );
        assert_eq!(unescape_mount_path(r"/plain"), "/plain");
        assert_eq!(unescape_mount_path(r"/trailing\04"), r"/trailing\04");
    }
}
