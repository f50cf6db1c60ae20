//! The OCI layer unpacker on arbitrary tar streams (whiteouts, opaque markers, `..`, absolute
//! paths, symlinks and hard links pointing out, devices): an error or a tree, and nothing ever
//! written outside the destination.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fuzz_target!(|data: &[u8]| {
    let outer = tempfile::tempdir().expect("tempdir");
    let dest = outer.path().join("root");
    let beside = outer.path().join("beside");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(&beside).unwrap();
    std::fs::write(beside.join("keep"), b"keep").unwrap();
    let _ = microsandbox_agent::image::extract_layer(std::io::Cursor::new(data), &dest);
    // Only `root/...` may have changed.
    let outside: Vec<String> = listing(outer.path())
        .into_iter()
        .filter(|p| !p.starts_with(&dest.display().to_string()))
        .collect();
    assert_eq!(
        outside,
        vec![
            beside.display().to_string(),
            beside.join("keep").display().to_string()
        ],
        "the layer wrote outside its destination"
    );
    assert_eq!(std::fs::read(beside.join("keep")).unwrap(), b"keep");
});
