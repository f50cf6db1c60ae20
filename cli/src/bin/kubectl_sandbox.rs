//! `kubectl-sandbox`: see `microsandbox_cli`.

#[tokio::main]
async fn main() {
    let code = microsandbox_cli::main_as("kubectl-sandbox", std::env::args().collect()).await;
    std::process::exit(code);
}
