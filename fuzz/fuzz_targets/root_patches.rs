//! Root filesystem patches (text, append, mkdir, symlink, remove, copy) from arbitrary JSON,
//! applied to a root whose files include symlinks pointing out: typed errors or changes inside
//! the root, never outside it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microsandbox_agent::rootfs::host_access::HostAccess;
use microsandbox_wire::api::RootPatch;

fuzz_target!(|data: &[u8]| {
    let Ok(patches) = serde_json::from_slice::<Vec<RootPatch>>(data) else {
        return;
    };
    let outer = tempfile::tempdir().expect("tempdir");
    let root = outer.path().join("root");
    let beside = outer.path().join("beside");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(&beside).unwrap();
    std::fs::write(beside.join("keep"), b"keep").unwrap();
    // Traps: links that lead out of the root, absolute and relative.
    std::os::unix::fs::symlink(&beside, root.join("out")).unwrap();
    std::os::unix::fs::symlink("../beside", root.join("etc/up")).unwrap();
    let _ = microsandbox_agent::rootfs::patch::apply(&root, &patches, &HostAccess::default());
    let left: Vec<_> = std::fs::read_dir(&beside)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("keep")],
        "a patch wrote outside the root"
    );
    assert_eq!(std::fs::read(beside.join("keep")).unwrap(), b"keep");
});
