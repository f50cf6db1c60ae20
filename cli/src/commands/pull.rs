//! `msb pull IMAGE` with progress.

use std::io::{IsTerminal, Write};

use futures::TryStreamExt;
use microsandbox::PullEvent;

use crate::error::Result;

pub async fn pull(image: &str, json: bool) -> Result<i32> {
    let mut events = microsandbox::pull(image).await?;
    let tty = std::io::stderr().is_terminal() && !json;
    let (mut total, mut done) = (0usize, 0usize);
    while let Some(ev) = events.try_next().await? {
        if json {
            crate::output::json(&ev);
            continue;
        }
        match ev {
            PullEvent::Resolved { reference } => eprintln!("pulling {reference}"),
            PullEvent::Manifest { layers, .. } => total = layers,
            PullEvent::LayerCached { .. } | PullEvent::LayerExtracted { .. } => {
                done += 1;
                progress(tty, done, total);
            }
            PullEvent::LayerDownloaded { .. } => {}
            PullEvent::Done { digest } => {
                if tty {
                    eprintln!();
                }
                println!("{digest}");
            }
            PullEvent::Error { error } => {
                return Err(microsandbox::Error::Agent {
                    code: error.code,
                    message: error.message,
                }
                .into())
            }
        }
    }
    Ok(0)
}

/// `[#####     ] 3/6 layers`, redrawn in place on a terminal, a line per layer elsewhere.
fn progress(tty: bool, done: usize, total: usize) {
    let total = total.max(done);
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    let bar = format!(
        "[{}{}] {done}/{total} layers",
        "#".repeat(filled),
        " ".repeat(width - filled)
    );
    let mut err = std::io::stderr();
    let _interrupted = if tty {
        write!(err, "\r{bar}").and_then(|()| err.flush())
    } else {
        writeln!(err, "{bar}")
    };
}
