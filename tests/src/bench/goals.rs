//! The targets of issues 15 (exclusions, watch mode), 17 (a
//! durability-fair reference, the embedded store, a million tiny files),
//! 18 (encrypted folders) and 19 (a receiver on S3), and the checks of the
//! watch scenarios and of the receiver's PUTs, which compare Ferry with a
//! bound rather than with another tool.

use super::peers::RESTIC_LOCAL;
use super::report::{median, Limit, TargetCheck};
use super::s3::RESTIC_S3;

/// The durability-fair reference: `rsync -a --fsync` to the daemon.
pub const RSYNC_FSYNC: &str = "rsync --fsync";
/// The reference of the `store-*` rows: Ferry to a receiver (their Ferry
/// column is `ferry send --store`).
pub const FERRY_RECEIVER: &str = "ferry to a receiver";
/// The reference of the `exclude-*` rows: Ferry on the same tree without
/// its `node_modules`.
pub const WITHOUT_NODE_MODULES: &str = "ferry, no node_modules";
/// The reference of the `sealed-*` rows: the same set sent plain to a
/// receiver (their Ferry column is `--protect encrypted`).
pub const FERRY_PLAIN: &str = "ferry, plain";

/// Row targets: (scenario, reference, limit), as in `report::TARGETS`.
pub const TARGETS: &[(&str, &str, Limit)] = &[
    ("small-first", RSYNC_FSYNC, Limit::WallRatio(0.5)),
    ("small-first-hot", RSYNC_FSYNC, Limit::WallRatio(0.5)),
    ("store-first", FERRY_RECEIVER, Limit::WallRatio(1.0)),
    ("store-nochange", FERRY_RECEIVER, Limit::WallRatio(1.0)),
    ("exclude-first", WITHOUT_NODE_MODULES, Limit::WallRatio(1.1)),
    (
        "exclude-nochange",
        WITHOUT_NODE_MODULES,
        Limit::WallRatio(1.1),
    ),
    // Issue 18: what encryption may cost over the same folder sent plain.
    ("sealed-large-first", FERRY_PLAIN, Limit::WallRatio(1.15)),
    ("sealed-large-first", FERRY_PLAIN, Limit::CpuRatio(1.2)),
    ("sealed-large-insert", FERRY_PLAIN, Limit::WireRatio(1.2)),
    ("sealed-large-rename", FERRY_PLAIN, Limit::WireRatio(1.2)),
    ("sealed-large-overwrite", FERRY_PLAIN, Limit::WireRatio(1.2)),
    ("sealed-small-first", FERRY_PLAIN, Limit::WallRatio(1.2)),
    // Issue 17: a million tiny files, each side's memory bounded.
    (
        "huge-first",
        RESTIC_LOCAL,
        Limit::SenderRss(HUGE_RSS_MAX_KIB),
    ),
    (
        "huge-first",
        RESTIC_LOCAL,
        Limit::ReceiverRss(HUGE_RSS_MAX_KIB),
    ),
    (
        "huge-nochange",
        RESTIC_LOCAL,
        Limit::SenderRss(HUGE_RSS_MAX_KIB),
    ),
    (
        "huge-nochange",
        RESTIC_LOCAL,
        Limit::ReceiverRss(HUGE_RSS_MAX_KIB),
    ),
    ("huge-nochange", RESTIC_LOCAL, Limit::WallRatio(0.3)),
    // Issue 19: a receiver keeping its bytes in a bucket, against restic
    // into the same bucket.
    ("s3-small-first", RESTIC_S3, Limit::WallRatio(0.8)),
    ("s3-large-first", RESTIC_S3, Limit::WallRatio(0.8)),
    ("s3-small-nochange", RESTIC_S3, Limit::WallRatio(0.5)),
    ("s3-large-nochange", RESTIC_S3, Limit::WallRatio(0.5)),
    (
        "s3-small-first",
        RESTIC_S3,
        Limit::ReceiverRss(S3_RSS_MAX_KIB),
    ),
    (
        "s3-large-first",
        RESTIC_S3,
        Limit::ReceiverRss(S3_RSS_MAX_KIB),
    ),
    (
        "s3-small-nochange",
        RESTIC_S3,
        Limit::ReceiverRss(S3_RSS_MAX_KIB),
    ),
    (
        "s3-large-nochange",
        RESTIC_S3,
        Limit::ReceiverRss(S3_RSS_MAX_KIB),
    ),
];

/// Highest peak RSS of a receiver on a bucket, KiB.
pub const S3_RSS_MAX_KIB: u64 = 128 << 10;

/// Most PUT requests a receiver on a bucket may make per 1,000 files of the
/// small set's first sync: the packs and the catalog copies it logs. The
/// lease's renewals (one PUT every 20 s, whatever is sent) are not counted.
pub const S3_PUTS_PER_1000_MAX: f64 = 50.0;

/// Highest peak RSS of either Ferry side on the `huge` tree, KiB.
pub const HUGE_RSS_MAX_KIB: u64 = 128 << 10;

/// Most entries a watch-triggered run may stat.
pub const WATCH_ENTRIES_MAX: u64 = 1_000;
/// Most CPU seconds an idle watching sender may use in the idle window.
pub const IDLE_CPU_MAX_S: f64 = 0.5;
/// Highest peak RSS of an idle watching sender, KiB.
pub const IDLE_RSS_MAX_KIB: u64 = 64 << 10;

fn check(
    scenario: &str,
    measure: &'static str,
    target: String,
    value: f64,
    limit: f64,
) -> TargetCheck {
    TargetCheck {
        scenario: scenario.to_string(),
        reference: String::new(),
        measure,
        target,
        ferry: value,
        other: None,
        limit,
        met: value <= limit,
        ratio: None,
    }
}

/// `s3-small-first`: the receiver's PUTs (packs + catalog copies, the
/// median run's) per 1,000 of the set's `files`.
pub fn s3_puts(per_1000: f64, files: usize) -> TargetCheck {
    check(
        "s3-small-first",
        "puts",
        format!("<= {S3_PUTS_PER_1000_MAX} PUTs per 1,000 files ({files} files sent)"),
        per_1000,
        S3_PUTS_PER_1000_MAX,
    )
}

/// `watch-latency`: the median of the latencies (seconds from a file's
/// close to its version in the receiver's catalog) against the watch delay
/// plus one second. `None` without latencies.
pub fn watch_latency(latencies: &[f64], delay_s: f64) -> Option<TargetCheck> {
    let median = median(latencies.to_vec())?;
    Some(check(
        "watch-latency",
        "latency",
        format!("median <= watch delay ({delay_s} s) + 1 s"),
        median,
        delay_s + 1.0,
    ))
}

/// `watch-latency`: the largest count of entries a triggered run stat'ed.
/// `None` without runs.
pub fn watch_entries(counts: &[u64]) -> Option<TargetCheck> {
    let most = counts.iter().copied().max()?;
    Some(check(
        "watch-latency",
        "entries",
        format!("each triggered run <= {WATCH_ENTRIES_MAX} entries stat'ed (the most)"),
        most as f64,
        WATCH_ENTRIES_MAX as f64,
    ))
}

/// `watch-idle`: the sender's CPU seconds over the idle window.
pub fn idle_cpu(cpu_s: f64, window_s: u64) -> TargetCheck {
    check(
        "watch-idle",
        "cpu",
        format!("<= {IDLE_CPU_MAX_S} s of sender CPU in {window_s} s idle"),
        cpu_s,
        IDLE_CPU_MAX_S,
    )
}

/// `watch-idle`: the sender's peak RSS (KiB) over the idle window.
pub fn idle_rss(peak_kib: u64) -> TargetCheck {
    check(
        "watch-idle",
        "rss",
        format!("sender peak RSS <= {} MiB", IDLE_RSS_MAX_KIB >> 10),
        peak_kib as f64,
        IDLE_RSS_MAX_KIB as f64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::process::Usage;
    use crate::bench::report::{Report, Sample};

    #[test]
    fn watch_checks_read_the_median_and_the_most() {
        let t = watch_latency(&[2.9, 9.0, 2.1, 2.5], 2.0).expect("latencies");
        assert_eq!(t.ferry, 2.7);
        assert_eq!(t.limit, 3.0);
        assert!(t.met);
        let t = watch_latency(&[3.2, 3.1, 1.0], 2.0).expect("latencies");
        assert!(!t.met, "{t:?}");
        assert!(watch_latency(&[], 2.0).is_none());

        let t = watch_entries(&[212, 1001, 3]).expect("runs");
        assert_eq!(t.ferry, 1001.0);
        assert!(!t.met);
        assert!(watch_entries(&[1000]).expect("runs").met);
        assert!(watch_entries(&[]).is_none());

        assert!(idle_cpu(0.5, 60).met);
        assert!(!idle_cpu(0.51, 60).met);
        assert!(idle_rss(64 << 10).met);
        assert!(!idle_rss((64 << 10) + 1).met);
    }

    #[test]
    fn sealed_rows_are_held_to_plain_ferrys_figures() {
        let mut report = Report::default();
        let run = |wall_s, wire, cpu_s| Sample {
            wall_s,
            wire_total: Some(wire),
            client: Some(Usage {
                cpu_s,
                max_rss_kib: 1,
            }),
            server: Some(Usage {
                cpu_s,
                max_rss_kib: 1,
            }),
            ..Sample::default()
        };
        let gb = 1 << 30;
        report.add(
            "sealed-large-first",
            FERRY_PLAIN,
            gb,
            Some(run(11.0, gb, 1.1)),
            run(10.0, gb, 1.0),
        );
        report.add(
            "sealed-large-insert",
            FERRY_PLAIN,
            1,
            Some(run(1.0, 64 << 20, 0.5)),
            run(1.0, 10_000, 0.1),
        );
        report.add(
            "sealed-small-first",
            FERRY_PLAIN,
            1 << 20,
            Some(run(1.3, 1, 0.1)),
            run(1.0, 1, 0.1),
        );
        let goals = report.goals();
        let got: Vec<(&str, &str, bool)> = goals
            .iter()
            .map(|t| (t.scenario.as_str(), t.measure, t.met))
            .collect();
        assert_eq!(
            got,
            [
                ("sealed-large-first", "wall", true),
                ("sealed-large-first", "cpu", true),
                ("sealed-large-insert", "wire", false),
                ("sealed-small-first", "wall", false),
            ]
        );
        assert!(report.targets().is_empty(), "not issue 5's targets");
        let table = report.table();
        assert!(
            table.contains(
                "sealed-small-first vs ferry, plain: wall 1.30, target <= 1.2 x ferry, plain's = 1.20: MISSED (ratio 1.30)"
            ),
            "{table}"
        );
        assert!(table.contains("sealed-large-first ferry: "), "{table}");
        assert!(
            table.contains("sealed-large-insert vs ferry, plain: wire 67.1 MB"),
            "{table}"
        );
    }

    #[test]
    fn huge_rows_bound_each_sides_memory_and_the_no_change_time() {
        let mut report = Report::default();
        let run = |wall_s, client_kib, server_kib: Option<u64>| Sample {
            wall_s,
            client: Some(Usage {
                cpu_s: 1.0,
                max_rss_kib: client_kib,
            }),
            server: server_kib.map(|max_rss_kib| Usage {
                cpu_s: 1.0,
                max_rss_kib,
            }),
            ..Sample::default()
        };
        let restic = run(30.0, 300 << 10, None);
        let first = run(100.0, 120 << 10, Some(20 << 10));
        report.add("huge-first", RESTIC_LOCAL, 1, Some(first), restic.clone());
        let nochange = run(10.0, (128 << 10) + 1, Some(128 << 10));
        report.add("huge-nochange", RESTIC_LOCAL, 0, Some(nochange), restic);
        let goals = report.goals();
        let got: Vec<(&str, &str, bool, Option<f64>)> = goals
            .iter()
            .map(|t| (t.scenario.as_str(), t.measure, t.met, t.ratio))
            .collect();
        let third = Some(10.0 / 30.0);
        assert_eq!(
            got,
            [
                ("huge-first", "rss", true, None),
                ("huge-first", "rss", true, None),
                ("huge-nochange", "rss", false, None),
                ("huge-nochange", "rss", true, None),
                ("huge-nochange", "wall", false, third),
            ]
        );
        let table = report.table();
        assert!(
            table.contains(
                "huge-first vs restic local: rss 120 MiB, target sender peak RSS <= 128 MiB = 128 MiB: met\n"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "huge-first vs restic local: rss 20 MiB, target receiver peak RSS <= 128 MiB = 128 MiB: met\n"
            ),
            "{table}"
        );
    }

    #[test]
    fn s3_rows_are_held_to_restics_time_the_receivers_memory_and_puts() {
        let mut report = Report::default();
        let run = |wall_s, server_kib: Option<u64>| Sample {
            wall_s,
            server: server_kib.map(|max_rss_kib| Usage {
                cpu_s: 1.0,
                max_rss_kib,
            }),
            ..Sample::default()
        };
        let restic = run(10.0, None);
        report.add(
            "s3-small-first",
            RESTIC_S3,
            1,
            Some(run(8.0, Some(40 << 10))),
            restic.clone(),
        );
        report.add(
            "s3-small-nochange",
            RESTIC_S3,
            0,
            Some(run(5.1, Some((128 << 10) + 1))),
            restic,
        );
        report.checks.push(s3_puts(0.6, 20_000));
        report.checks.push(s3_puts(50.5, 2_000));
        let goals = report.goals();
        let got: Vec<(&str, &str, bool)> = goals
            .iter()
            .map(|t| (t.scenario.as_str(), t.measure, t.met))
            .collect();
        assert_eq!(
            got,
            [
                ("s3-small-first", "wall", true),
                ("s3-small-nochange", "wall", false),
                ("s3-small-first", "rss", true),
                ("s3-small-nochange", "rss", false),
                ("s3-small-first", "puts", true),
                ("s3-small-first", "puts", false),
            ]
        );
        let table = report.table();
        assert!(
            table.contains(
                "s3-small-first: puts 0.6, target <= 50 PUTs per 1,000 files (20000 files sent) = 50.0: met\n"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "s3-small-nochange vs restic s3: wall 5.10, target <= 0.5 x restic s3's = 5.00: MISSED (ratio 0.51)"
            ),
            "{table}"
        );
    }

    #[test]
    fn goals_are_printed_apart_from_issue_5s() {
        let mut report = Report::default();
        let wall = |wall_s| Sample {
            wall_s,
            ..Sample::default()
        };
        report.add("small-first", RSYNC_FSYNC, 1, Some(wall(2.0)), wall(5.0));
        report.add("store-first", FERRY_RECEIVER, 1, Some(wall(2.0)), wall(1.0));
        report.checks.push(idle_rss(20 << 10));
        let goals = report.goals();
        let got: Vec<(&str, bool)> = goals.iter().map(|t| (t.scenario.as_str(), t.met)).collect();
        assert_eq!(
            got,
            [
                ("small-first", true),
                ("store-first", false),
                ("watch-idle", true)
            ]
        );
        assert!(report.targets().is_empty());
        let table = report.table();
        assert!(
            table.contains("Targets of issues 15, 17, 18 and 19"),
            "{table}"
        );
        assert!(
            table.contains(
                "small-first vs rsync --fsync: wall 2.00, target <= 0.5 x rsync --fsync's = 2.50: met"
            ),
            "{table}"
        );
        assert!(
            table
                .contains("watch-idle: rss 20 MiB, target sender peak RSS <= 64 MiB = 64 MiB: met"),
            "{table}"
        );
        let json = report.json(serde_json::json!({}));
        assert_eq!(json["targets"].as_array().map(Vec::len), Some(3));

        // Only checks (the watch scenarios alone): no empty table header.
        let mut only = Report::default();
        only.checks.push(idle_cpu(0.1, 60));
        let table = only.table();
        assert!(!table.contains("scenario"), "{table}");
        assert!(table.contains("watch-idle: cpu 0.10"), "{table}");
    }
}
