//! `exclude-first` and `exclude-nochange` (issue 15): the small set plus a
//! `node_modules` of 100,000 files (5,000 with `--quick`), sent with
//! `--exclude node_modules/`, against the small set alone sent with the same
//! flag. The excluded directory should cost one `stat`: the target is
//! within 1.1x.
//!
//! The tree with `node_modules` holds hard links to the small set's files
//! (no second copy of its data; same inodes, so same content and metadata),
//! re-linked whenever the small set was regenerated, and a generated
//! `node_modules` kept between runs.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::data::{DataSet, SetKind, SplitMix64};
use super::goals::WITHOUT_NODE_MODULES;
use super::report::Report;
use super::scenarios::{alternate, Extra};
use super::tools::{remove_tree, Ferry};

/// Bump when the generated `node_modules` changes.
const NODE_MODULES_VERSION: &str = "ferry-bench node_modules v1";
/// Files per package directory of `node_modules`.
const FILES_PER_PACKAGE: usize = 100;

/// Files in `node_modules`: 100,000, or 5,000 with `--quick`.
fn node_modules_files(quick: bool) -> usize {
    if quick {
        5_000
    } else {
        100_000
    }
}

/// Where file `i` of `node_modules` lives, relative to it.
fn node_module_rel(i: usize) -> PathBuf {
    PathBuf::from(format!(
        "pkg{:04}/lib/m{:03}.js",
        i / FILES_PER_PACKAGE,
        i % FILES_PER_PACKAGE
    ))
}

/// Measures the `exclude-*` scenarios of the plan.
pub fn run(extra: &Extra<'_>, report: &mut Report) -> anyhow::Result<()> {
    let plan = extra.plan;
    let quick = plan.sizes == super::data::Sizes::quick();
    let set = DataSet::prepare(&plan.data_dir, SetKind::Small, plan.sizes)?;
    let with = prepare(&plan.data_dir, &set, node_modules_files(quick))?;
    let with_name = with
        .file_name()
        .and_then(|n| n.to_str())
        .context("the tree's name")?
        .to_string();
    let ferry = Ferry::setup(
        &plan.ferry_bin,
        &extra.work.join("ferry-exclude"),
        &[&with_name, &set.name],
    )?;
    let flag: [&OsStr; 2] = ["--exclude".as_ref(), "node_modules/".as_ref()];
    let scratch = extra.scratch;
    for rep in 0..plan.reps {
        for (scenario, bytes) in [("exclude-first", set.bytes), ("exclude-nochange", 0)] {
            if scenario == "exclude-nochange" && !plan.wants(scenario) {
                continue;
            }
            // As in `store`: each store emptied right before its own first
            // sync (untimed).
            let first = scenario == "exclude-first";
            let (ferry_with, mut others) = alternate(
                plan.reps,
                rep,
                scenario,
                Box::new(|| {
                    if first {
                        ferry.reset(&with_name)?;
                    }
                    ferry.run_with(&with_name, &with, &flag, scratch)
                }),
                vec![(
                    WITHOUT_NODE_MODULES,
                    Box::new(|| {
                        if first {
                            ferry.reset(&set.name)?;
                        }
                        ferry.run_with(&set.name, &set.root, &flag, scratch)
                    }),
                )],
            )?;
            // Both mirrors are the small set: node_modules is not sent.
            ferry_tests::tree::assert_same(&set.root, &ferry.mirror(&with_name))
                .with_context(|| format!("{scenario}: the mirror of {with_name} differs"))?;
            ferry_tests::tree::assert_same(&set.root, &ferry.mirror(&set.name))
                .with_context(|| format!("{scenario}: the mirror of {} differs", set.name))?;
            if plan.wants(scenario) {
                report.add(
                    scenario,
                    WITHOUT_NODE_MODULES,
                    bytes,
                    Some(ferry_with),
                    others.remove(0),
                );
            }
        }
    }
    ferry.reset(&with_name)?;
    ferry.reset(&set.name)
}

/// The tree `<set>+node_modules-<n>` under `data_dir`: hard links to every
/// file of `set` and a generated `node_modules` of `files` files. Returns
/// its root.
fn prepare(data_dir: &Path, set: &DataSet, files: usize) -> anyhow::Result<PathBuf> {
    let root = data_dir.join(format!("{}+node_modules-{files}", set.name));
    let marker = root.with_extension("ready");
    let modules = root.join("node_modules");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(NODE_MODULES_VERSION) {
        eprintln!(
            "bench: generating {files} files in {} ...",
            modules.display()
        );
        remove_tree(&root)?;
        for i in 0..files {
            let path = modules.join(node_module_rel(i));
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut rng = SplitMix64::new("node_modules", i as u64);
            let content = format!(
                "module.exports = {{ id: {i}, seed: 0x{:016x} }};\n",
                rng.next_u64()
            );
            std::fs::write(&path, content)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        std::fs::write(&marker, NODE_MODULES_VERSION)
            .with_context(|| format!("writing {}", marker.display()))?;
    }
    link_tree(&set.root, &root)?;
    Ok(root)
}

/// Makes every file below `from` a hard link at the same place below `to`
/// (directories created), unless it already is one.
fn link_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let dir = from.join(&rel);
        std::fs::create_dir_all(to.join(&rel))?;
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let rel = rel.join(entry.file_name());
            let meta = entry.metadata()?;
            if meta.is_dir() {
                dirs.push(rel);
                continue;
            }
            let link = to.join(&rel);
            match std::fs::symlink_metadata(&link) {
                Ok(m) if m.ino() == meta.ino() && m.dev() == meta.dev() => continue,
                Ok(_) => std::fs::remove_file(&link)
                    .with_context(|| format!("removing {}", link.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("reading {}", link.display())),
            }
            std::fs::hard_link(entry.path(), &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linked_tree_is_the_set_plus_node_modules() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let sizes = crate::bench::data::Sizes {
            small_files: 120,
            large_files: 1,
            large_size: 1 << 20,
            text_files: 1,
        };
        let set = DataSet::prepare(dir.path(), SetKind::Small, sizes)?;
        let root = prepare(dir.path(), &set, 250)?;
        let modules = ferry_tests::tree::snapshot(&root.join("node_modules"))?;
        // 250 files in 3 packages, each with a lib/ directory.
        assert_eq!(modules.len(), 250 + 3 * 2);
        std::fs::rename(root.join("node_modules"), dir.path().join("aside"))?;
        ferry_tests::tree::assert_same(&set.root, &root)?;
        std::fs::rename(dir.path().join("aside"), root.join("node_modules"))?;
        // A regenerated set is linked again.
        set.begin_edit()?;
        let again = DataSet::prepare(dir.path(), SetKind::Small, sizes)?;
        let relinked = prepare(dir.path(), &again, 250)?;
        let a = std::fs::metadata(again.root.join(again.rel(7)))?;
        let b = std::fs::metadata(relinked.join(again.rel(7)))?;
        assert_eq!(a.ino(), b.ino());
        Ok(())
    }
}
