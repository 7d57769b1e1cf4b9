//! The `sealed-*` scenarios (issue 18): an encrypted folder (`ferry send
//! --protect encrypted --key-file K`) against the same set sent plain, both
//! to a real receiver process, alternating who goes first. In these rows
//! the Ferry column is the encrypted folder and the reference is plain
//! Ferry ([`FERRY_PLAIN`]).
//!
//! - `sealed-small-first`, `sealed-small-nochange`: the small set into
//!   empty stores, then again unchanged;
//! - `sealed-large-first`: the large set into empty stores;
//! - `sealed-large-insert`, `sealed-large-overwrite`, `sealed-large-rename`:
//!   the edits of the plain `large-*` scenarios ([`EDITS`]), one after the
//!   other on top of the first sync, for the bytes on the wire.
//!
//! Every run is checked: the plain mirror must equal the source; the
//! encrypted folder's mirror must hold no real path, and restoring it with
//! the key (`ferry restore --store … --key-file K --passphrase-file P`,
//! untimed) must give back the source exactly, metadata included.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::data::{DataSet, SetKind, OVERWRITE_LEN};
use super::goals::FERRY_PLAIN;
use super::report::{Report, Sample};
use super::scenarios::{alternate, Extra};
use super::tools::{output, remove_tree, Ferry};

/// The scenarios of the small set.
const SMALL: &[&str] = &["sealed-small-first", "sealed-small-nochange"];
/// The scenarios of the large set, the first sync first.
const LARGE: &[&str] = &[
    "sealed-large-first",
    "sealed-large-insert",
    "sealed-large-overwrite",
    "sealed-large-rename",
];

/// The edits of the large set, in the order they are made, with the file
/// each one touches (modulo the set's file count): those of the plain
/// `large-insert`, `large-overwrite` and `large-rename` in `scenarios`.
pub const EDITS: [(&str, usize); 3] = [
    ("sealed-large-insert", 1),
    ("sealed-large-overwrite", 3),
    ("sealed-large-rename", 2),
];

/// The passphrase of the bench's folder key (written to a file, no newline).
const PASSPHRASE: &str = "ferry bench folder key passphrase";

/// The two folders a data set is sent to: encrypted and plain.
struct Folders<'s> {
    set: &'s DataSet,
    sealed: String,
    plain: String,
}

impl<'s> Folders<'s> {
    fn of(set: &'s DataSet) -> Folders<'s> {
        Folders {
            set,
            sealed: sealed_name(&set.name),
            plain: plain_name(&set.name),
        }
    }
}

fn sealed_name(set: &str) -> String {
    format!("{set}-sealed")
}

fn plain_name(set: &str) -> String {
    format!("{set}-plain")
}

/// Ferry's stores and sender states, the folder key and where restores go.
struct Sealed<'a> {
    extra: &'a Extra<'a>,
    ferry: Ferry,
    key: PathBuf,
    passphrase: PathBuf,
    restored: PathBuf,
}

/// Measures the `sealed-*` scenarios of the plan.
pub fn run(extra: &Extra<'_>, report: &mut Report) -> anyhow::Result<()> {
    let plan = extra.plan;
    let small = SMALL.iter().any(|s| plan.wants(s));
    let large = LARGE.iter().any(|s| plan.wants(s));
    let mut sets = Vec::new();
    if small {
        sets.push(DataSet::prepare(
            &plan.data_dir,
            SetKind::Small,
            plan.sizes,
        )?);
    }
    if large {
        sets.push(DataSet::prepare(
            &plan.data_dir,
            SetKind::Large,
            plan.sizes,
        )?);
    }
    let names: Vec<String> = sets
        .iter()
        .flat_map(|set| [sealed_name(&set.name), plain_name(&set.name)])
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let dir = extra.work.join("ferry-sealed");
    let ferry = Ferry::setup(&plan.ferry_bin, &dir, &names)?;
    let bench = Sealed::setup(extra, ferry, &dir)?;
    for set in &sets {
        let folders = Folders::of(set);
        match set.kind {
            SetKind::Small => bench.small(&folders, report)?,
            _ => bench.large(&folders, report)?,
        }
        bench.ferry.reset(&folders.sealed)?;
        bench.ferry.reset(&folders.plain)?;
    }
    Ok(())
}

impl<'a> Sealed<'a> {
    /// Makes the folder key once: `ferry key new --out K --passphrase-file P`.
    fn setup(extra: &'a Extra<'a>, ferry: Ferry, dir: &Path) -> anyhow::Result<Sealed<'a>> {
        let key = dir.join("folder.key");
        let passphrase = dir.join("passphrase");
        std::fs::write(&passphrase, PASSPHRASE)
            .with_context(|| format!("writing {}", passphrase.display()))?;
        if key.exists() {
            std::fs::remove_file(&key).with_context(|| format!("removing {}", key.display()))?;
        }
        output(
            ferry.bin(),
            &[
                "key".as_ref(),
                "new".as_ref(),
                "--out".as_ref(),
                key.as_os_str(),
                "--passphrase-file".as_ref(),
                passphrase.as_os_str(),
            ],
        )
        .context("making the bench's folder key with ferry key new")?;
        Ok(Sealed {
            extra,
            ferry,
            key,
            passphrase,
            restored: dir.join("restored"),
        })
    }

    fn small(&self, folders: &Folders<'_>, report: &mut Report) -> anyhow::Result<()> {
        let plan = self.extra.plan;
        for rep in 0..plan.reps {
            self.measure(rep, "sealed-small-first", folders, true, report)?;
            if plan.wants("sealed-small-nochange") {
                self.measure(rep, "sealed-small-nochange", folders, false, report)?;
            }
        }
        Ok(())
    }

    fn large(&self, folders: &Folders<'_>, report: &mut Report) -> anyhow::Result<()> {
        let plan = self.extra.plan;
        let set = folders.set;
        for rep in 0..plan.reps {
            // The first sync is also the base of the edits.
            self.measure(rep, "sealed-large-first", folders, true, report)?;
            if !EDITS.iter().any(|(s, _)| plan.wants(s)) {
                continue;
            }
            set.begin_edit()?;
            let mut touched = Vec::new();
            for (scenario, i) in EDITS {
                if !plan.wants(scenario) {
                    continue;
                }
                let i = i % set.files;
                edit(set, scenario, i)?;
                touched.push(i);
                self.measure(rep, scenario, folders, false, report)?;
            }
            touched.sort_unstable();
            touched.dedup();
            for i in touched {
                set.restore_file(i)?;
            }
            set.end_edit()?;
        }
        Ok(())
    }

    /// One repetition of `scenario`: the encrypted folder against the plain
    /// one on the set as it is now (each store emptied right before its own
    /// run when `first`, untimed), both checked, the row added if wanted.
    fn measure(
        &self,
        rep: usize,
        scenario: &str,
        folders: &Folders<'_>,
        first: bool,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let plan = self.extra.plan;
        let scratch = self.extra.scratch;
        let root = &folders.set.root;
        let (sealed, mut others) = alternate(
            plan.reps,
            rep,
            scenario,
            Box::new(|| {
                if first {
                    self.ferry.reset(&folders.sealed)?;
                }
                self.send_sealed(&folders.sealed, root)
            }),
            vec![(
                FERRY_PLAIN,
                Box::new(|| {
                    if first {
                        self.ferry.reset(&folders.plain)?;
                    }
                    self.ferry.run(&folders.plain, root, scratch)
                }),
            )],
        )?;
        self.check(scenario, folders)?;
        if plan.wants(scenario) {
            let bytes = moved(scenario, folders.set);
            report.add(scenario, FERRY_PLAIN, bytes, Some(sealed), others.remove(0));
        }
        Ok(())
    }

    /// A measured `ferry send --protect encrypted --key-file K` of `source`
    /// into folder `folder` (no passphrase: sending needs the public half).
    fn send_sealed(&self, folder: &str, source: &Path) -> anyhow::Result<Sample> {
        let flags: [&OsStr; 4] = [
            "--protect".as_ref(),
            "encrypted".as_ref(),
            "--key-file".as_ref(),
            self.key.as_os_str(),
        ];
        self.ferry
            .run_with(folder, source, &flags, self.extra.scratch)
    }

    /// Both copies against the source: the plain mirror directly; the
    /// encrypted one sealed, then restored with the key.
    fn check(&self, scenario: &str, folders: &Folders<'_>) -> anyhow::Result<()> {
        let set = folders.set;
        ferry_tests::tree::assert_same(&set.root, &self.ferry.mirror(&folders.plain))
            .with_context(|| format!("{scenario}: the plain mirror differs from the source"))?;
        assert_sealed(set, &self.ferry.mirror(&folders.sealed))
            .with_context(|| format!("{scenario}: the encrypted folder is not sealed"))?;
        remove_tree(&self.restored)?;
        self.restore(&folders.sealed)
            .with_context(|| format!("{scenario}: restoring the encrypted folder"))?;
        ferry_tests::tree::assert_same(&set.root, &self.restored).with_context(|| {
            format!("{scenario}: the encrypted folder restored differs from the source")
        })?;
        remove_tree(&self.restored)
    }

    /// `ferry restore --store STORE --name bench --folder F --to DIR
    /// --key-file K --passphrase-file P` (the receiver is stopped).
    fn restore(&self, folder: &str) -> anyhow::Result<()> {
        let store = self.ferry.store(folder);
        output(
            self.ferry.bin(),
            &[
                "restore".as_ref(),
                "--store".as_ref(),
                store.as_os_str(),
                "--name".as_ref(),
                "bench".as_ref(),
                "--folder".as_ref(),
                folder.as_ref(),
                "--to".as_ref(),
                self.restored.as_os_str(),
                "--key-file".as_ref(),
                self.key.as_os_str(),
                "--passphrase-file".as_ref(),
                self.passphrase.as_os_str(),
            ],
        )?;
        Ok(())
    }
}

/// Makes the edit of `scenario` on file `i` of `set`.
fn edit(set: &DataSet, scenario: &str, i: usize) -> anyhow::Result<()> {
    match scenario {
        "sealed-large-insert" => set.insert_byte(i),
        "sealed-large-overwrite" => set.overwrite_middle(i),
        "sealed-large-rename" => set.rename_file(i),
        other => bail!("unknown edit {other}"),
    }
}

/// Bytes of file content `scenario` moves (as the plain rows count them).
fn moved(scenario: &str, set: &DataSet) -> u64 {
    match scenario {
        "sealed-small-first" | "sealed-large-first" => set.bytes,
        "sealed-large-insert" => 1,
        "sealed-large-overwrite" => OVERWRITE_LEN.min(set.file_size),
        _ => 0,
    }
}

/// Fails unless `mirror` holds files and none of the set's real paths (the
/// receiver keeps sealed objects at opaque paths only): every real path,
/// renamed or not, would start with one of these top-level names.
fn assert_sealed(set: &DataSet, mirror: &Path) -> anyhow::Result<()> {
    let mut objects = 0;
    for entry in walkdir::WalkDir::new(mirror) {
        let entry = entry.with_context(|| format!("reading {}", mirror.display()))?;
        if entry.file_type().is_file() {
            objects += 1;
        }
    }
    if objects == 0 {
        bail!("{} holds no object", mirror.display());
    }
    let tops: BTreeSet<PathBuf> = (0..set.files)
        .flat_map(|i| [set.rel(i), set.renamed_rel(i)])
        .filter_map(|rel| {
            rel.components()
                .next()
                .map(|c| PathBuf::from(c.as_os_str()))
        })
        .collect();
    for top in tops {
        let at = mirror.join(&top);
        if at.symlink_metadata().is_ok() {
            bail!(
                "{} is stored in the clear at {}",
                top.display(),
                at.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::scenarios::ALL;

    #[test]
    fn every_sealed_scenario_is_known_and_measured_here() {
        for s in SMALL.iter().chain(LARGE) {
            assert!(ALL.contains(s), "{s} is not in scenarios::ALL");
        }
        let sealed: Vec<&str> = ALL
            .iter()
            .copied()
            .filter(|s| s.starts_with("sealed-"))
            .collect();
        assert_eq!(sealed.len(), SMALL.len() + LARGE.len(), "{sealed:?}");
        for (scenario, _) in EDITS {
            assert!(LARGE.contains(&scenario), "{scenario}");
            // The same edit as the plain row of the same name.
            let plain = scenario.trim_start_matches("sealed-");
            assert!(ALL.contains(&plain), "{plain}");
        }
        assert_ne!(sealed_name("s"), plain_name("s"));
    }

    #[test]
    fn a_mirror_holding_a_real_path_is_not_sealed() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let set = DataSet {
            kind: SetKind::Large,
            name: "large-1x1MiB".into(),
            root: dir.path().join("src"),
            files: 1,
            file_size: 1 << 20,
            bytes: 1 << 20,
        };
        let mirror = dir.path().join("mirror");
        std::fs::create_dir_all(&mirror)?;
        assert!(assert_sealed(&set, &mirror).is_err(), "an empty mirror");
        ferry_tests::tree::write(&mirror, "3f/3fa90c2e", "object")?;
        assert_sealed(&set, &mirror)?;
        ferry_tests::tree::write(&mirror, set.rel(0), "plain")?;
        assert!(assert_sealed(&set, &mirror).is_err(), "a real path");
        Ok(())
    }

    #[test]
    fn bytes_moved_are_those_of_the_plain_rows() {
        let set = DataSet {
            kind: SetKind::Large,
            name: "large-1x64MiB".into(),
            root: PathBuf::from("/nonexistent"),
            files: 1,
            file_size: 64 << 20,
            bytes: 64 << 20,
        };
        assert_eq!(moved("sealed-large-first", &set), 64 << 20);
        assert_eq!(moved("sealed-large-insert", &set), 1);
        assert_eq!(moved("sealed-large-overwrite", &set), 1 << 20);
        assert_eq!(moved("sealed-large-rename", &set), 0);
        assert_eq!(moved("sealed-small-nochange", &set), 0);
    }
}
