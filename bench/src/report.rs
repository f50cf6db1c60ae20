//! The results table (markdown) and its JSON twin.

use serde_json::{json, Map, Value};

/// What a target is checked against.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// No target: reported only.
    None,
    /// `ratio` must be at most this.
    RatioAtMost(f64),
    /// `ours` must be at most this (in the row's unit).
    AtMost(f64),
    /// `ours` must be at least this (in the row's unit).
    AtLeast(f64),
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Position in the table (benchmarks do not run in table order).
    pub section: u8,
    pub benchmark: String,
    pub unit: &'static str,
    pub ours: f64,
    /// Baseline value (same unit) and what it is.
    pub baseline: Option<(f64, String)>,
    /// Larger values are better (throughput) rather than smaller (latency, memory).
    pub higher_is_better: bool,
    pub target: Target,
}

impl Row {
    /// How many times worse than the baseline: ours/baseline for latency and memory,
    /// baseline/ours for throughput. 1.0 = on par, 2.0 = twice as slow (or as big).
    pub fn ratio(&self) -> Option<f64> {
        let (base, _) = self.baseline.as_ref()?;
        let (num, den) = if self.higher_is_better {
            (*base, self.ours)
        } else {
            (self.ours, *base)
        };
        (den > 0.0).then(|| num / den)
    }

    pub fn met(&self) -> Option<bool> {
        match self.target {
            Target::None => None,
            Target::RatioAtMost(r) => self.ratio().map(|x| x <= r),
            Target::AtMost(v) => Some(self.ours <= v),
            Target::AtLeast(v) => Some(self.ours >= v),
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::None => "-".into(),
            Target::RatioAtMost(r) => format!("ratio ≤ {r:.1}x"),
            Target::AtMost(v) => format!("≤ {} {}", num(v), self.unit),
            Target::AtLeast(v) => format!("≥ {} {}", num(v), self.unit),
        }
    }
}

/// A number with a sensible precision.
fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Everything measured in one run.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Raw numbers per benchmark (sample summaries, splits, counts).
    pub details: Map<String, Value>,
    pub notes: Vec<String>,
}

impl Report {
    /// Adds a row (rows print in `section` order, then insertion order).
    pub fn row(&mut self, row: Row) {
        eprintln!(
            "  -> {}: {} {}{}",
            row.benchmark,
            num(row.ours),
            row.unit,
            row.baseline
                .as_ref()
                .map(|(b, what)| format!(" (baseline {what}: {} {})", num(*b), row.unit))
                .unwrap_or_default()
        );
        self.rows.push(row);
        self.rows.sort_by_key(|r| r.section);
    }

    pub fn detail(&mut self, key: &str, value: Value) {
        self.details.insert(key.to_string(), value);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "| benchmark | ours | baseline | ratio | target | met? |\n|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let baseline = r
                .baseline
                .as_ref()
                .map(|(b, what)| format!("{} {} ({what})", num(*b), r.unit))
                .unwrap_or_else(|| "-".into());
            let ratio = r
                .ratio()
                .map(|x| format!("{x:.2}x"))
                .unwrap_or_else(|| "-".into());
            let met = match r.met() {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            };
            s.push_str(&format!(
                "| {} | {} {} | {baseline} | {ratio} | {} | {met} |\n",
                r.benchmark,
                num(r.ours),
                r.unit,
                r.target_text()
            ));
        }
        s.push_str(
            "\nratio = times worse than the baseline measured in this run \
             (latency, memory: ours/baseline; throughput: baseline/ours). MB = 10^6 bytes.\n",
        );
        for n in &self.notes {
            s.push_str(&format!("- {n}\n"));
        }
        s
    }

    pub fn json(&self, config: Value, host: Value) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "benchmark": r.benchmark,
                    "unit": r.unit,
                    "ours": r.ours,
                    "baseline": r.baseline.as_ref().map(|(b, _)| *b),
                    "baseline_what": r.baseline.as_ref().map(|(_, w)| w.clone()),
                    "ratio": r.ratio(),
                    "target": r.target_text(),
                    "met": r.met(),
                })
            })
            .collect();
        json!({
            "rows": rows,
            "details": self.details,
            "notes": self.notes,
            "config": config,
            "host": host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ours: f64, base: f64, higher: bool, target: Target) -> Row {
        Row {
            section: 0,
            benchmark: "x".into(),
            unit: "ms",
            ours,
            baseline: Some((base, "b".into())),
            higher_is_better: higher,
            target,
        }
    }

    #[test]
    fn ratios_are_slowdowns() {
        assert_eq!(row(4.0, 2.0, false, Target::None).ratio(), Some(2.0));
        assert_eq!(row(250.0, 1000.0, true, Target::None).ratio(), Some(4.0));
        assert_eq!(
            row(3.0, 2.0, false, Target::RatioAtMost(2.0)).met(),
            Some(true)
        );
        assert_eq!(row(1.5, 0.1, false, Target::AtMost(1.0)).met(), Some(false));
        assert_eq!(
            row(600.0, 1.0, true, Target::AtLeast(500.0)).met(),
            Some(true)
        );
        assert_eq!(row(1.0, 1.0, false, Target::None).met(), None);
    }
}
