//! A registry that wants a password: Debian's `docker-registry` (the one
//! `scripts/test-registry.sh` runs anonymously on 127.0.0.1:5000) on a free loopback port with
//! htpasswd auth, for tests that must show credentials are sent and checked.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user and password the registry accepts.
pub const USER: &str = "robot";
pub const PASSWORD: &str = "msb-test-registry-pw";
/// bcrypt (cost 5) of [`PASSWORD`], as htpasswd files hold it: test data, not a secret.
const HTPASSWD: &str = "robot:$2b$05$4y0yd92oUpvip9avDNeBnOpryBeGAIuWXevOYfhpaNVfIWSXGvrmu\n";
const BIN: &str = "/usr/bin/docker-registry";

/// A running registry with htpasswd auth; stopped and its storage removed on drop.
pub struct AuthRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    child: Child,
    dir: PathBuf,
}

impl AuthRegistry {
    /// Starts one and waits until it answers `401` on `/v2/`. Panics when it cannot.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let dir =
            std::env::temp_dir().join(format!("msb-auth-registry-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("storage")).expect("registry dir");
        std::fs::write(dir.join("htpasswd"), HTPASSWD).expect("htpasswd");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {storage}\nauth:\n  htpasswd:\n    realm: msb-test\n    path: {htpasswd}\nhttp:\n  addr: {addr}\n  secret: msb-test-auth-registry\n",
            storage = dir.join("storage").display(),
            htpasswd = dir.join("htpasswd").display(),
        );
        std::fs::write(dir.join("config.yml"), config).expect("registry config");
        let child = Command::new(BIN)
            .args(["serve", &dir.join("config.yml").display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{BIN}: {e} (scripts/setup.sh installs it)"));
        let made = Self { addr, child, dir };
        let start = Instant::now();
        loop {
            if made.status_of("/v2/") == Some(401) {
                return made;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the auth registry on {} does not answer",
                made.addr
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The HTTP status of an anonymous GET of `path`.
    pub fn status_of(&self, path: &str) -> Option<u16> {
        let mut s = TcpStream::connect(&self.addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
