//! The ratios a bench measured against its targets, printed as one table; with
//! `GANTRY_BENCH_TABLE` set (as `benches/run` sets it), also appended to that file as
//! tab-separated rows, so that one command can print every bench's ratios together.

use std::io::Write;

/// Which side of its target a ratio must be on.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    /// The ratio must not exceed the target (latency, memory, overhead).
    AtMost(f64),
    /// The ratio must reach the target (throughput).
    AtLeast(f64),
    /// No target: the ratio is shown for what it tells.
    None,
}

/// One measured ratio: gantry's figure against a baseline measured in the same run.
#[derive(Debug, Clone)]
pub struct Ratio {
    what: String,
    gantry: String,
    baseline: String,
    ratio: f64,
    bound: Bound,
}

impl Ratio {
    /// A ratio that should be at most `target`.
    pub fn at_most(
        what: String,
        gantry: String,
        baseline: String,
        ratio: f64,
        target: f64,
    ) -> Ratio {
        Ratio {
            what,
            gantry,
            baseline,
            ratio,
            bound: Bound::AtMost(target),
        }
    }

    /// A ratio that should be at least `target`.
    pub fn at_least(
        what: String,
        gantry: String,
        baseline: String,
        ratio: f64,
        target: f64,
    ) -> Ratio {
        Ratio {
            what,
            gantry,
            baseline,
            ratio,
            bound: Bound::AtLeast(target),
        }
    }

    /// A ratio with no target.
    pub fn measured(what: String, gantry: String, baseline: String, ratio: f64) -> Ratio {
        Ratio {
            what,
            gantry,
            baseline,
            ratio,
            bound: Bound::None,
        }
    }

    fn verdict(&self) -> &'static str {
        match self.bound {
            Bound::AtMost(t) if self.ratio <= t => "met",
            Bound::AtLeast(t) if self.ratio >= t => "met",
            Bound::None => "",
            _ => "NOT MET",
        }
    }

    fn target(&self) -> String {
        match self.bound {
            Bound::AtMost(t) => format!("≤ {t}"),
            Bound::AtLeast(t) => format!("≥ {t}"),
            Bound::None => "—".into(),
        }
    }

    fn cells(&self, bench: &str) -> [String; 7] {
        [
            bench.to_string(),
            self.what.clone(),
            self.gantry.clone(),
            self.baseline.clone(),
            format!("{:.2}", self.ratio),
            self.target(),
            self.verdict().to_string(),
        ]
    }
}

/// One bench's ratios.
#[derive(Debug)]
pub struct Table {
    bench: &'static str,
    rows: Vec<Ratio>,
}

impl Table {
    /// An empty table for the bench named `bench`.
    pub fn new(bench: &'static str) -> Table {
        Table {
            bench,
            rows: Vec::new(),
        }
    }

    /// Add a measured ratio.
    pub fn push(&mut self, ratio: Ratio) {
        self.rows.push(ratio);
    }

    /// Print the table, and append its rows to `GANTRY_BENCH_TABLE` when that is set.
    pub fn print(&self) {
        println!("\nratios ({}):", self.bench);
        println!("| what | gantry | baseline | ratio | target | |");
        println!("|---|---|---|---|---|---|");
        for row in &self.rows {
            let [_, what, gantry, baseline, ratio, target, met] = row.cells(self.bench);
            println!("| {what} | {gantry} | {baseline} | {ratio} | {target} | {met} |");
        }
        if let Some(path) = std::env::var_os("GANTRY_BENCH_TABLE") {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("opening GANTRY_BENCH_TABLE");
            for row in &self.rows {
                writeln!(file, "{}", row.cells(self.bench).join("\t")).unwrap();
            }
        }
    }
}
