mod common;

use common::*;
use futures::SinkExt;
use microsandbox_wire::guest::*;
use std::os::unix::fs::PermissionsExt;

fn s(p: &std::path::Path) -> String {
    p.to_str().unwrap().to_string()
}

#[tokio::test]
async fn write_and_read_20_mib() {
    let agent = Agent::start();
    let data = pattern(20 * 1024 * 1024 + 5, 3);
    let path = agent.path("big.bin");
    assert_eq!(
        agent.write_file(&path, &data, 0o640, false).await,
        data.len() as u64
    );
    let on_disk = std::fs::read(&path).unwrap();
    assert!(on_disk == data);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    let back = agent.read_file(&path).await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data);
}

#[tokio::test]
async fn write_truncates_and_appends() {
    let agent = Agent::start();
    let path = agent.path("f.txt");
    agent
        .write_file(&path, b"first version, long", 0o600, false)
        .await;
    agent.write_file(&path, b"second", 0o755, false).await;
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(agent.write_file(&path, b"+more", 0o755, true).await, 5);
    assert_eq!(std::fs::read(&path).unwrap(), b"second+more");
    // Empty file.
    let empty = agent.path("empty");
    assert_eq!(agent.write_file(&empty, b"", 0o644, false).await, 0);
    assert_eq!(agent.read_file(&empty).await.unwrap(), b"");
}

#[tokio::test]
async fn write_into_missing_dir_is_not_found() {
    let agent = Agent::start();
    let mut conn = agent
        .request(Request::WriteFile {
            path: s(&agent.path("missing/dir/file")),
            mode: 0o644,
            append: false,
        })
        .await;
    match next(&mut conn).await {
        GuestFrame::Error(e) => assert_eq!(e.kind, GuestErrorKind::NotFound),
        other => panic!("unexpected {other:?}"),
    }
    assert!(!agent.path("missing").exists());
}

#[tokio::test]
async fn write_interrupted_keeps_partial_file() {
    let mut agent = Agent::start();
    let path = agent.path("partial");
    let mut conn = agent
        .request(Request::WriteFile {
            path: s(&path),
            mode: 0o644,
            append: false,
        })
        .await;
    conn.send(HostFrame::Stdin(b"partial data".to_vec().into()))
        .await
        .unwrap();
    drop(conn);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(std::fs::read(&path).unwrap(), b"partial data");
    assert!(agent.is_running());
    assert_eq!(agent.ok(Request::Ping).await, Response::Pong);
}

#[tokio::test]
async fn read_errors_are_typed() {
    let agent = Agent::start();
    let e = agent.read_file(&agent.path("nope")).await.unwrap_err();
    assert_eq!(e.kind, GuestErrorKind::NotFound);
    assert!(e.message.contains("nope"));
    let e = agent.read_file(agent.dir.path()).await.unwrap_err();
    assert_eq!(e.kind, GuestErrorKind::IsADirectory);
    let e = agent
        .err(Request::Stat {
            path: s(&agent.path("nope")),
        })
        .await;
    assert_eq!(e.kind, GuestErrorKind::NotFound);
    let e = agent
        .err(Request::List {
            path: s(&agent.path("nope")),
        })
        .await;
    assert_eq!(e.kind, GuestErrorKind::NotFound);
    let e = agent
        .err(Request::Remove {
            path: s(&agent.path("nope")),
            recursive: true,
        })
        .await;
    assert_eq!(e.kind, GuestErrorKind::NotFound);
}

#[tokio::test]
async fn directory_operations() {
    let agent = Agent::start();
    let root = agent.path("tree");
    // mkdir without parents fails on a missing parent; with parents it works.
    let e = agent
        .err(Request::Mkdir {
            path: s(&root.join("a/b")),
            parents: false,
        })
        .await;
    assert_eq!(e.kind, GuestErrorKind::NotFound);
    agent
        .ok(Request::Mkdir {
            path: s(&root.join("a/b")),
            parents: true,
        })
        .await;
    let e = agent
        .err(Request::Mkdir {
            path: s(&root.join("a")),
            parents: false,
        })
        .await;
    assert_eq!(e.kind, GuestErrorKind::AlreadyExists);

    agent
        .write_file(&root.join("z.txt"), b"zzz", 0o600, false)
        .await;
    agent
        .write_file(&root.join("a/b/inner"), b"12345", 0o751, false)
        .await;
    std::os::unix::fs::symlink("z.txt", root.join("link")).unwrap();

    // list: sorted, lstat semantics.
    let Response::Entries(entries) = agent.ok(Request::List { path: s(&root) }).await else {
        panic!()
    };
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "link", "z.txt"]);
    assert_eq!(entries[0].stat.kind, FileKind::Dir);
    assert_eq!(entries[1].stat.kind, FileKind::Symlink);
    assert_eq!(entries[2].stat.kind, FileKind::File);
    assert_eq!(entries[2].stat.size, 3);
    assert_eq!(entries[2].stat.mode, 0o600);

    // stat.
    let Response::Stat(st) = agent
        .ok(Request::Stat {
            path: s(&root.join("link")),
        })
        .await
    else {
        panic!()
    };
    assert_eq!(st.kind, FileKind::Symlink);
    let Response::Stat(st) = agent
        .ok(Request::Stat {
            path: s(&root.join("a/b/inner")),
        })
        .await
    else {
        panic!()
    };
    assert_eq!((st.kind, st.size, st.mode), (FileKind::File, 5, 0o751));
    assert!(st.mtime_secs > 1_600_000_000);

    // copy: recursive, modes kept, symlinks as symlinks.
    let copy = agent.path("copy");
    agent
        .ok(Request::Copy {
            from: s(&root),
            to: s(&copy),
        })
        .await;
    assert_eq!(std::fs::read(copy.join("a/b/inner")).unwrap(), b"12345");
    assert_eq!(
        std::fs::metadata(copy.join("a/b/inner"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o751
    );
    assert_eq!(
        std::fs::read_link(copy.join("link")).unwrap(),
        std::path::Path::new("z.txt")
    );
    assert_eq!(std::fs::read(copy.join("z.txt")).unwrap(), b"zzz");
    // single file copy
    agent
        .ok(Request::Copy {
            from: s(&root.join("z.txt")),
            to: s(&agent.path("z-copy")),
        })
        .await;
    assert_eq!(std::fs::read(agent.path("z-copy")).unwrap(), b"zzz");
    // into itself
    let e = agent
        .err(Request::Copy {
            from: s(&root),
            to: s(&root.join("a/inside")),
        })
        .await;
    assert_eq!(e.kind, GuestErrorKind::InvalidRequest);

    // rename.
    agent
        .ok(Request::Rename {
            from: s(&copy.join("z.txt")),
            to: s(&copy.join("renamed.txt")),
        })
        .await;
    assert!(!copy.join("z.txt").exists());
    assert_eq!(std::fs::read(copy.join("renamed.txt")).unwrap(), b"zzz");
    let e = agent
        .err(Request::Rename {
            from: s(&copy.join("z.txt")),
            to: s(&copy.join("x")),
        })
        .await;
    assert_eq!(e.kind, GuestErrorKind::NotFound);

    // remove: non-recursive on a non-empty dir fails and removes nothing.
    let e = agent
        .err(Request::Remove {
            path: s(&copy),
            recursive: false,
        })
        .await;
    assert_ne!(e.kind, GuestErrorKind::NotFound);
    assert!(copy.join("a/b/inner").exists());
    // file, symlink (not its target), empty dir, then recursive.
    agent
        .ok(Request::Remove {
            path: s(&copy.join("link")),
            recursive: false,
        })
        .await;
    assert!(copy.join("renamed.txt").exists());
    agent
        .ok(Request::Remove {
            path: s(&copy.join("renamed.txt")),
            recursive: false,
        })
        .await;
    agent
        .ok(Request::Remove {
            path: s(&copy),
            recursive: true,
        })
        .await;
    assert!(!copy.exists());
    assert!(root.join("a/b/inner").exists());
}
