//! The seed's example in Rust: create a sandbox, run Python in it, remove it.
//!
//! `cargo run -p microsandbox --example hello` (starts the local agent if none runs; set
//! `MSB_MIRRORS=docker.io=127.0.0.1:5000` to pull from the test registry of `make setup`).

use microsandbox::{NetworkPolicy, Sandbox};

#[tokio::main]
async fn main() -> microsandbox::Result<()> {
    let sb = Sandbox::builder("my-sandbox")
        .image("python")
        .memory(512)
        .cpus(2)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .workdir("/app")
        .network(NetworkPolicy::none())
        .create()
        .await?;
    let output = sb.exec("python3", ["-c", "print('Hello!')"]).await?;
    print!("{}", output.stdout_str());
    sb.remove().await
}
