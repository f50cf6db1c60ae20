//! `microsandbox-agent doctor`: what this host can run, and exactly why not.
//!
//! [`diagnose`] probes the host once ([`facts`]: /dev/kvm ioctls, `dlopen` of libkrun and
//! libkrunfw, `crun --version`, /proc and cgroup mounts), then judges the facts without further
//! I/O ([`evaluate`]): a list of [`Check`]s and, per isolation level, a verdict.
//! The same verdict gates [`crate::runtime::microvm::MicrovmRuntime::probe`], so a refused
//! microVM request carries the reason doctor prints.

pub mod evaluate;
pub mod facts;
pub mod parse;

use std::fmt;
use std::path::PathBuf;

use microsandbox_wire::api::Isolation;
use serde::Serialize;

pub use facts::HostFacts;

use crate::runtime::microvm::MicrovmSettings;

/// What doctor needs to know about the agent's configuration.
#[derive(Debug, Clone, Default)]
pub struct DoctorOptions {
    /// Custom guest kernel (`--kernel`).
    pub kernel: Option<PathBuf>,
    /// Explicit libkrun (`--libkrun`).
    pub libkrun: Option<PathBuf>,
}

impl From<&MicrovmSettings> for DoctorOptions {
    fn from(s: &MicrovmSettings) -> Self {
        DoctorOptions {
            kernel: s.kernel.as_ref().map(|k| k.path.clone()),
            libkrun: s.libkrun.clone(),
        }
    }
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        })
    }
}

/// One thing checked on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    /// Isolation levels that a failure of this check rules out.
    pub affects: Vec<Isolation>,
    /// What was found, and on failure why it matters and how to fix it.
    pub message: String,
}

/// Whether one isolation level can run here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub isolation: Isolation,
    pub available: bool,
    /// Why not (the failing checks), when unavailable.
    pub reason: Option<String>,
}

/// Doctor's full answer: `Display` renders a table, `Serialize` feeds `doctor --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub isolation: Vec<Verdict>,
    /// The raw probe results the checks were derived from.
    pub facts: HostFacts,
}

impl Report {
    /// Judge already-probed facts (pure).
    pub fn from_facts(facts: HostFacts) -> Report {
        let checks = evaluate::checks(&facts);
        let isolation = [Isolation::Microvm, Isolation::Container]
            .into_iter()
            .map(|isolation| {
                let v = evaluate::verdict(&checks, isolation);
                Verdict {
                    isolation,
                    available: v.is_ok(),
                    reason: v.err(),
                }
            })
            .collect();
        Report {
            checks,
            isolation,
            facts,
        }
    }
}

/// Diagnose this host with the default options (libkrunfw's kernel, libkrun from the loader's
/// search path). Blocking: call it through `spawn_blocking` from async code.
pub fn diagnose() -> Report {
    diagnose_with(&DoctorOptions::default())
}

/// Diagnose this host for the given agent options. Blocking.
pub fn diagnose_with(options: &DoctorOptions) -> Report {
    Report::from_facts(facts::probe(options))
}

/// Each isolation level and whether this host can provide it (`Err` holds the reason).
pub fn available_isolation(report: &Report) -> Vec<(Isolation, Result<(), String>)> {
    report
        .isolation
        .iter()
        .map(|v| (v.isolation, v.reason.clone().map_or(Ok(()), Err)))
        .collect()
}

/// The microVM verdict of a report.
pub fn microvm_verdict(report: &Report) -> Result<(), String> {
    evaluate::verdict(&report.checks, Isolation::Microvm)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        writeln!(f, "{:<6}{:<width$}  DETAIL", "", "CHECK")?;
        for c in &self.checks {
            writeln!(
                f,
                "{:<6}{:<width$}  {}",
                c.status.to_string(),
                c.name,
                c.message
            )?;
        }
        writeln!(f)?;
        for v in &self.isolation {
            match &v.reason {
                None => writeln!(f, "{:<10} yes", v.isolation)?,
                Some(why) => writeln!(f, "{:<10} no: {why}", v.isolation)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_renders_and_serializes() {
        let report = diagnose();
        let text = report.to_string();
        assert!(
            text.contains("kvm device") && text.contains("microvm") && text.contains("container"),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["checks"].as_array().is_some_and(|c| !c.is_empty()));
        assert_eq!(json["isolation"][0]["isolation"], "microvm");
        let avail = available_isolation(&report);
        assert_eq!(avail.len(), 2);
        assert_eq!(avail[0].0, Isolation::Microvm);
        assert_eq!(avail[0].1.is_ok(), report.isolation[0].available);
        assert_eq!(microvm_verdict(&report), avail[0].1);
    }
}
