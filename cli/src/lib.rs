//! `msb`, the microsandbox command line, and its MCP server. `main` only picks the name it was
//! called by (`msb`, `msx` = `msb exe`, `msr` = `msb run --sandbox`, `msi` = `msb install`,
//! `kubectl-sandbox` = `msb --cluster`).

pub mod cli;
pub mod commands;
pub mod error;
pub mod output;
pub mod sandboxfile;
pub mod target;

use clap::Parser;

/// Run the command line as `name`, with `args` (the program name first); the exit status.
pub async fn main_as(name: &str, args: Vec<String>) -> i32 {
    let args = rewrite(name, args);
    let cli = match cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = e.exit_code();
            let _printed = e.print();
            return code;
        }
    };
    match commands::dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("msb: {e}");
            e.exit_code()
        }
    }
}

/// `msx ARGS` is `msb exe ARGS`; `msr TARGET ARGS` is `msb run --sandbox TARGET ARGS`; `msi
/// ARGS` is `msb install ARGS`; `kubectl-sandbox ARGS` (the kubectl plugin `kubectl sandbox`) is
/// `msb --cluster ARGS`.
pub fn rewrite(name: &str, args: Vec<String>) -> Vec<String> {
    let rest = args.into_iter().skip(1);
    let mut out = vec!["msb".to_string()];
    match name {
        "msx" => out.push("exe".into()),
        "msi" => out.push("install".into()),
        "kubectl-sandbox" | "kubectl-msb" => out.push("--cluster".into()),
        "msr" => {
            let mut rest = rest.peekable();
            out.push("run".into());
            if let Some(target) = rest.peek().filter(|t| !t.starts_with('-')).cloned() {
                rest.next();
                out.extend(["--sandbox".to_string(), target]);
            }
            out.extend(rest);
            return out;
        }
        _ => {}
    }
    out.extend(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            rewrite("msx", v(&["msx", "python", "-c", "1"])),
            v(&["msb", "exe", "python", "-c", "1"])
        );
        assert_eq!(
            rewrite("msr", v(&["msr", "app~test", "a"])),
            v(&["msb", "run", "--sandbox", "app~test", "a"])
        );
        assert_eq!(rewrite("msb", v(&["msb", "ls"])), v(&["msb", "ls"]));
        assert_eq!(
            rewrite("msi", v(&["msi", "python"])),
            v(&["msb", "install", "python"])
        );
        assert_eq!(
            rewrite(
                "kubectl-sandbox",
                v(&["kubectl-sandbox", "exec", "s", "--", "ls"])
            ),
            v(&["msb", "--cluster", "exec", "s", "--", "ls"])
        );
    }
}
