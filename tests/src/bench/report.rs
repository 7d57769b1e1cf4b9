//! Samples, their medians, the printed table and the JSON report.

use serde::Serialize;

use super::process::Usage;

/// The reference of most rows: `rsync -a` to an rsync daemon.
pub const RSYNC: &str = "rsync daemon";
/// The compressing reference of `text-first`.
pub const RSYNC_Z: &str = "rsync -z zstd";

/// What a target of issue 5 bounds, for Ferry's medians in one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// Bytes on the wire at most this many.
    Wire(u64),
    /// Bytes on the wire at most this times the reference's.
    WireRatio(f64),
    /// Wall time at most this times the reference's.
    WallRatio(f64),
    /// CPU seconds per GB moved, both sides, at most this times the
    /// reference's.
    CpuRatio(f64),
    /// Peak RSS of Ferry's sender at most this many KiB.
    SenderRss(u64),
    /// Peak RSS of Ferry's receiver at most this many KiB.
    ReceiverRss(u64),
}

/// Issue 5's targets: (scenario, reference, limit). They are stated for a
/// 256 MiB file; the `--quick` set's file is smaller, which only helps.
pub const TARGETS: &[(&str, &str, Limit)] = &[
    ("large-append", RSYNC, Limit::Wire(256 << 10)),
    ("large-append", RSYNC, Limit::WireRatio(0.5)),
    ("large-insert", RSYNC, Limit::Wire(256 << 10)),
    ("large-insert", RSYNC, Limit::WireRatio(0.5)),
    ("large-rename", RSYNC, Limit::Wire(256 << 10)),
    ("large-overwrite", RSYNC, Limit::Wire(3 << 19)),
    ("text-first", RSYNC_Z, Limit::WireRatio(1.0)),
    ("text-first", RSYNC_Z, Limit::WallRatio(0.5)),
];

/// One target checked against a row's medians (or, for the watch
/// scenarios, against what they measured: see `goals`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetCheck {
    /// Scenario name.
    pub scenario: String,
    /// The reference tool of the row.
    pub reference: String,
    /// "wire" (bytes), "wall" (seconds), "cpu" (CPU seconds per GB) or
    /// "rss" (KiB, a peak of one side); for the watch scenarios also
    /// "latency" and "cpu" (seconds) and "entries" (a count); for the
    /// bucket store "puts" (PUT requests per 1,000 files).
    pub measure: &'static str,
    /// The target as written in the issue.
    pub target: String,
    /// Ferry's median.
    pub ferry: f64,
    /// The reference's median.
    pub other: Option<f64>,
    /// The bound Ferry's median must not exceed.
    pub limit: f64,
    /// Whether it does not.
    pub met: bool,
    /// Ferry's median over the reference's, for the ratio targets.
    pub ratio: Option<f64>,
}

/// What one measured run of one tool gave.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Wall seconds of the client (sender) process.
    pub wall_s: f64,
    /// Bytes on the wire, both directions together (Ferry: UDP payload as
    /// its summary reports it; rsync: sent + received).
    pub wire_total: Option<u64>,
    /// rsync: "Total bytes sent" (client to server).
    pub sent: Option<u64>,
    /// rsync: "Total bytes received" (server to client).
    pub received: Option<u64>,
    /// The sending side (Ferry sender, rsync client, `cp`).
    pub client: Option<Usage>,
    /// The receiving side (Ferry receiver, rsync daemon, sshd), if any.
    pub server: Option<Usage>,
}

/// Medians over the repetitions, field by field.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Medians {
    /// Number of samples.
    pub runs: usize,
    /// Wall seconds.
    pub wall_s: Option<f64>,
    /// Bytes on the wire, both directions.
    pub wire_total: Option<f64>,
    /// Bytes sent by the client (rsync).
    pub sent: Option<f64>,
    /// Bytes received by the client (rsync).
    pub received: Option<f64>,
    /// CPU seconds of the sending side.
    pub client_cpu_s: Option<f64>,
    /// CPU seconds of the receiving side.
    pub server_cpu_s: Option<f64>,
    /// CPU seconds of both sides together (median of the per-run sums).
    pub total_cpu_s: Option<f64>,
    /// Peak RSS of the sending side, KiB.
    pub client_rss_kib: Option<f64>,
    /// Peak RSS of the receiving side, KiB.
    pub server_rss_kib: Option<f64>,
}

/// The median of some numbers (mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn median_of(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    median(samples.iter().filter_map(f).collect())
}

impl Medians {
    /// Medians of `samples`.
    pub fn of(samples: &[Sample]) -> Medians {
        Medians {
            runs: samples.len(),
            wall_s: median_of(samples, |s| Some(s.wall_s)),
            wire_total: median_of(samples, |s| s.wire_total.map(|b| b as f64)),
            sent: median_of(samples, |s| s.sent.map(|b| b as f64)),
            received: median_of(samples, |s| s.received.map(|b| b as f64)),
            client_cpu_s: median_of(samples, |s| s.client.map(|u| u.cpu_s)),
            server_cpu_s: median_of(samples, |s| s.server.map(|u| u.cpu_s)),
            total_cpu_s: median_of(samples, |s| {
                Some(s.client?.cpu_s + s.server.map_or(0.0, |u| u.cpu_s))
            }),
            client_rss_kib: median_of(samples, |s| s.client.map(|u| u.max_rss_kib as f64)),
            server_rss_kib: median_of(samples, |s| s.server.map(|u| u.max_rss_kib as f64)),
        }
    }
}

/// One line of the table: Ferry against one reference tool in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Scenario name (as `--scenarios` takes it).
    pub scenario: String,
    /// The reference tool, e.g. "rsync daemon".
    pub reference: String,
    /// Bytes of file content the scenario moves (for CPU seconds per GB).
    pub bytes: u64,
    /// Ferry's samples (shared between rows of the same scenario).
    pub ferry: Vec<Sample>,
    /// The reference's samples.
    pub other: Vec<Sample>,
}

/// The whole result.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Rows in the order they were first measured.
    pub rows: Vec<Row>,
    /// Remarks printed under the table (skipped rows, warm caches, ...).
    pub notes: Vec<String>,
    /// Targets checked by the scenarios themselves (watch mode), printed
    /// with those of `goals::TARGETS`.
    pub checks: Vec<TargetCheck>,
    /// Measurements that are not samples of a row (per-change watch
    /// latencies, ...), by scenario; in the JSON only.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    /// Adds one repetition's samples to the row (`scenario`, `reference`).
    pub fn add(
        &mut self,
        scenario: &str,
        reference: &str,
        bytes: u64,
        ferry: Option<Sample>,
        other: Sample,
    ) {
        let index = match self
            .rows
            .iter()
            .position(|r| r.scenario == scenario && r.reference == reference)
        {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    scenario: scenario.to_string(),
                    reference: reference.to_string(),
                    bytes,
                    ferry: Vec::new(),
                    other: Vec::new(),
                });
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[index];
        row.ferry.extend(ferry);
        row.other.push(other);
    }

    /// CPU seconds (both sides) per GB moved, from a row's medians.
    fn cpu_per_gb(medians: &Medians, bytes: u64) -> Option<f64> {
        (bytes > 0).then_some(medians.total_cpu_s? / (bytes as f64 / 1e9))
    }

    /// The table as text.
    pub fn table(&self) -> String {
        let header = [
            "scenario",
            "vs",
            "ferry s",
            "vs s",
            "ferry/vs",
            "ferry wire",
            "vs wire",
            "vs sent/recv",
            "RSS MiB ferry s/r",
            "vs s/r",
            "CPU s ferry s/r",
            "vs s/r",
        ];
        let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
        for row in &self.rows {
            let f = Medians::of(&row.ferry);
            let o = Medians::of(&row.other);
            let ratio = match (f.wall_s, o.wall_s) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "-".into(),
            };
            lines.push(vec![
                row.scenario.clone(),
                row.reference.clone(),
                secs(f.wall_s),
                secs(o.wall_s),
                ratio,
                bytes(f.wire_total),
                bytes(o.wire_total),
                pair(bytes(o.sent), bytes(o.received)),
                pair(mib(f.client_rss_kib), mib(f.server_rss_kib)),
                pair(mib(o.client_rss_kib), mib(o.server_rss_kib)),
                pair(secs(f.client_cpu_s), secs(f.server_cpu_s)),
                pair(secs(o.client_cpu_s), secs(o.server_cpu_s)),
            ]);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        // No header without rows (e.g. only the watch scenarios measured).
        let shown = if self.rows.is_empty() {
            &[][..]
        } else {
            &lines[..]
        };
        for (i, line) in shown.iter().enumerate() {
            let cells: Vec<String> = line
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, w))| {
                    if c < 2 {
                        format!("{cell:<w$}")
                    } else {
                        format!("{cell:>w$}")
                    }
                })
                .collect();
            out.push_str(cells.join(" | ").trim_end());
            out.push('\n');
            if i == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                out.push_str(&rule.join("-|-"));
                out.push('\n');
            }
        }
        let cpu = self.cpu_lines();
        if !cpu.is_empty() {
            out.push_str("\nCPU seconds per GB moved, both sides (medians):\n");
            for line in cpu {
                out.push_str(&format!("  {line}\n"));
            }
        }
        let targets = self.targets();
        if !targets.is_empty() {
            out.push_str("\nTargets of issue 5 and issue 17 (Ferry's medians):\n");
            for t in &targets {
                out.push_str(&target_line(t));
            }
        }
        let goals = self.goals();
        if !goals.is_empty() {
            out.push_str("\nTargets of issues 15, 17, 18 and 19 (Ferry's medians):\n");
            for t in &goals {
                out.push_str(&target_line(t));
            }
        }
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }

    /// [`TARGETS`] checked against the rows measured (others are left out).
    pub fn targets(&self) -> Vec<TargetCheck> {
        let list: Vec<_> = TARGETS
            .iter()
            .chain(super::peers::TARGETS)
            .copied()
            .collect();
        self.check_list(&list)
    }

    /// The targets of issues 15, 17, 18 and 19: `goals::TARGETS` checked against
    /// the rows measured, then [`Report::checks`].
    pub fn goals(&self) -> Vec<TargetCheck> {
        let mut out = self.check_list(super::goals::TARGETS);
        out.extend(self.checks.iter().cloned());
        out
    }

    fn check_list(&self, list: &[(&str, &str, Limit)]) -> Vec<TargetCheck> {
        let mut out = Vec::new();
        for &(scenario, reference, limit) in list {
            let Some(row) = self
                .rows
                .iter()
                .find(|r| r.scenario == scenario && r.reference == reference)
            else {
                continue;
            };
            let f = Medians::of(&row.ferry);
            let o = Medians::of(&row.other);
            let (measure, target, ferry, other, bound) = match limit {
                Limit::Wire(max) => (
                    "wire",
                    format!("<= {}", binary(max)),
                    f.wire_total,
                    o.wire_total,
                    Some(max as f64),
                ),
                Limit::WireRatio(k) => (
                    "wire",
                    format!("<= {k} x {reference}'s"),
                    f.wire_total,
                    o.wire_total,
                    o.wire_total.map(|b| k * b),
                ),
                Limit::WallRatio(k) => (
                    "wall",
                    format!("<= {k} x {reference}'s"),
                    f.wall_s,
                    o.wall_s,
                    o.wall_s.map(|s| k * s),
                ),
                Limit::SenderRss(max) => (
                    "rss",
                    format!("sender peak RSS <= {} MiB", max >> 10),
                    f.client_rss_kib,
                    o.client_rss_kib,
                    Some(max as f64),
                ),
                Limit::ReceiverRss(max) => (
                    "rss",
                    format!("receiver peak RSS <= {} MiB", max >> 10),
                    f.server_rss_kib,
                    o.server_rss_kib,
                    Some(max as f64),
                ),
                Limit::CpuRatio(k) => {
                    let o = Self::cpu_per_gb(&o, row.bytes);
                    (
                        "cpu",
                        format!("<= {k} x {reference}'s CPU-s/GB"),
                        Self::cpu_per_gb(&f, row.bytes),
                        o,
                        o.map(|c| k * c),
                    )
                }
            };
            let absolute = matches!(
                limit,
                Limit::Wire(_) | Limit::SenderRss(_) | Limit::ReceiverRss(_)
            );
            let (Some(ferry), Some(limit)) = (ferry, bound) else {
                continue;
            };
            let ratio = (!absolute)
                .then(|| other.filter(|o| *o > 0.0).map(|o| ferry / o))
                .flatten();
            out.push(TargetCheck {
                scenario: scenario.to_string(),
                reference: reference.to_string(),
                measure,
                target,
                ferry,
                other,
                limit,
                met: ferry <= limit,
                ratio,
            });
        }
        out
    }

    /// "scenario tool: x" (CPU seconds per GB) for each row that moves a
    /// whole data set: the first syncs and rsync over ssh; each set of Ferry
    /// samples once.
    fn cpu_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut ferry_seen: Vec<&Vec<Sample>> = Vec::new();
        for row in self.rows.iter().filter(|r| {
            r.scenario.ends_with("-first")
                || r.scenario.ends_with("-first-hot")
                || r.scenario == "large-ssh"
        }) {
            if !row.ferry.is_empty() && !ferry_seen.contains(&&row.ferry) {
                ferry_seen.push(&row.ferry);
                if let Some(v) = Self::cpu_per_gb(&Medians::of(&row.ferry), row.bytes) {
                    out.push(format!("{} ferry: {v:.2}", row.scenario));
                }
            }
            if let Some(v) = Self::cpu_per_gb(&Medians::of(&row.other), row.bytes) {
                out.push(format!("{} {}: {v:.2}", row.scenario, row.reference));
            }
        }
        out
    }

    /// The report as JSON: `meta`, then per row the raw samples and medians.
    pub fn json(&self, meta: serde_json::Value) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|row| {
                let f = Medians::of(&row.ferry);
                let o = Medians::of(&row.other);
                serde_json::json!({
                    "scenario": row.scenario,
                    "reference": row.reference,
                    "bytes": row.bytes,
                    "ratio_wall": match (f.wall_s, o.wall_s) {
                        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                        _ => None,
                    },
                    "ferry": { "median": f, "cpu_s_per_gb": Self::cpu_per_gb(&f, row.bytes), "samples": row.ferry },
                    "reference_tool": { "median": o, "cpu_s_per_gb": Self::cpu_per_gb(&o, row.bytes), "samples": row.other },
                })
            })
            .collect();
        serde_json::json!({
            "meta": meta,
            "rows": rows,
            "targets": self.targets().into_iter().chain(self.goals()).collect::<Vec<_>>(),
            "details": self.details,
            "notes": self.notes,
        })
    }
}

/// "  scenario vs reference: measure x, target t = limit: met" (no "vs" for
/// a check without a reference).
fn target_line(t: &TargetCheck) -> String {
    let show = |v: f64| match t.measure {
        "wall" | "latency" | "cpu" => secs(Some(v)),
        "rss" => format!("{} MiB", mib(Some(v))),
        "entries" => format!("{v:.0}"),
        "puts" => format!("{v:.1}"),
        _ => bytes(Some(v)),
    };
    let vs = if t.reference.is_empty() {
        String::new()
    } else {
        format!(" vs {}", t.reference)
    };
    format!(
        "  {}{vs}: {} {}, target {} = {}: {}{}\n",
        t.scenario,
        t.measure,
        show(t.ferry),
        t.target,
        show(t.limit),
        if t.met { "met" } else { "MISSED" },
        t.ratio
            .map_or(String::new(), |r| format!(" (ratio {r:.2})"))
    )
}

fn secs(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| format!("{s:.2}"))
}

fn mib(kib: Option<f64>) -> String {
    kib.map_or("-".into(), |k| format!("{:.0}", k / 1024.0))
}

/// Decimal units, like rsync's figures in FACTS.md.
fn bytes(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(b) if b >= 1e9 => format!("{:.2} GB", b / 1e9),
        Some(b) if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        Some(b) if b >= 1e3 => format!("{:.1} KB", b / 1e3),
        Some(b) => format!("{b:.0} B"),
    }
}

/// Binary units, as the issue states its targets: `262144` → `256 KiB`.
fn binary(b: u64) -> String {
    if b >= 1 << 20 && b.is_multiple_of(1 << 19) {
        format!("{} MiB", b as f64 / f64::from(1 << 20))
    } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
        format!("{} KiB", b >> 10)
    } else {
        format!("{b} B")
    }
}

fn pair(a: String, b: String) -> String {
    if a == "-" && b == "-" {
        "-".into()
    } else {
        format!("{a}/{b}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(wall_s: f64, cpu: f64) -> Sample {
        Sample {
            wall_s,
            wire_total: Some(1000),
            client: Some(Usage {
                cpu_s: cpu,
                max_rss_kib: 2048,
            }),
            server: Some(Usage {
                cpu_s: cpu,
                max_rss_kib: 4096,
            }),
            ..Sample::default()
        }
    }

    #[test]
    fn targets_are_read_off_the_medians() {
        let mut report = Report::default();
        // Ferry 1000 B against rsync's 1000 B: under 256 KiB, not under half.
        report.add(
            "large-append",
            RSYNC,
            1,
            Some(sample(1.0, 0.1)),
            sample(1.0, 0.1),
        );
        let big = Sample {
            wire_total: Some(2 << 20),
            ..sample(1.0, 0.1)
        };
        report.add(
            "large-overwrite",
            RSYNC,
            1 << 20,
            Some(big),
            sample(1.0, 0.1),
        );
        report.add(
            "text-first",
            RSYNC,
            1,
            Some(sample(2.0, 0.1)),
            sample(1.0, 0.1),
        );
        let z = Sample {
            wire_total: Some(999),
            ..sample(4.0, 0.1)
        };
        report.add("text-first", RSYNC_Z, 1, Some(sample(2.0, 0.1)), z);
        let checks = report.targets();
        let got: Vec<(&str, &str, bool)> = checks
            .iter()
            .map(|t| (t.scenario.as_str(), t.measure, t.met))
            .collect();
        assert_eq!(
            got,
            [
                ("large-append", "wire", true),
                ("large-append", "wire", false),
                ("large-overwrite", "wire", false),
                ("text-first", "wire", false),
                ("text-first", "wall", true),
            ]
        );
        assert_eq!(checks[2].limit, 1572864.0);
        assert_eq!(checks[2].target, "<= 1.5 MiB");
        assert_eq!(checks[0].target, "<= 256 KiB");
        let table = report.table();
        assert!(table.contains("Targets of issue 5"), "{table}");
        assert!(
            table.contains(
                "large-overwrite vs rsync daemon: wire 2.1 MB, target <= 1.5 MiB = 1.6 MB: MISSED"
            ),
            "{table}"
        );
        let json = report.json(serde_json::json!({}));
        assert_eq!(json["targets"][4]["met"], true);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        let m = Medians::of(&[sample(1.0, 0.5), sample(9.0, 1.5), sample(2.0, 1.0)]);
        assert_eq!(m.wall_s, Some(2.0));
        assert_eq!(m.total_cpu_s, Some(2.0));
        assert_eq!(m.server_rss_kib, Some(4096.0));
    }

    #[test]
    fn table_has_one_line_per_row_and_the_ratio() {
        let mut report = Report::default();
        for _ in 0..3 {
            report.add(
                "large-first",
                "rsync daemon",
                2_000_000_000,
                Some(sample(2.0, 1.0)),
                sample(4.0, 2.0),
            );
            report.add(
                "large-ssh",
                "rsync over ssh",
                2_000_000_000,
                Some(sample(2.0, 1.0)),
                sample(5.0, 3.0),
            );
        }
        report.add(
            "large-first",
            "cp -r",
            2_000_000_000,
            None,
            sample(1.0, 0.5),
        );
        assert_eq!(report.rows.len(), 3);
        assert_eq!(report.rows[0].ferry.len(), 3);
        let table = report.table();
        assert!(table.contains("0.50"), "{table}");
        assert!(table.contains("large-first ferry: 1.00"), "{table}");
        assert!(table.contains("large-first rsync daemon: 2.00"), "{table}");
        assert!(table.contains("large-ssh rsync over ssh: 3.00"), "{table}");
        assert!(!table.contains("large-ssh ferry"), "{table}");
        assert!(table.contains("vs wire"), "{table}");
        assert!(!table.contains("Targets of issue 5"), "{table}");
        let json = report.json(serde_json::json!({"quick": true}));
        assert_eq!(json["rows"][0]["ratio_wall"], 0.5);
        assert_eq!(
            json["rows"][0]["ferry"]["samples"].as_array().map(Vec::len),
            Some(3)
        );
    }
}
