//! Exclusion rules: what the user chose not to back up.
//!
//! Patterns are in gitignore syntax and matched by the `ignore` crate's
//! gitignore module with git's precedence: the `.ferryignore` files of the
//! tree first, the deepest one first (the last matching line of a file wins,
//! and a `!` line re-includes), then the patterns given by
//! `--exclude-file` and `--exclude` (as git's `info/exclude`), matched from
//! the source root. A directory that is excluded is not descended into, so
//! nothing below it can be re-included (as in git).
//!
//! Besides patterns: directories holding a valid `CACHEDIR.TAG`
//! (`--exclude-caches`) or a file of a given name (`--exclude-if-present`)
//! are skipped whole, and `--one-file-system` keeps the walk on the source
//! root's filesystem (a mount point is kept as an empty directory).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;

/// The per-directory pattern file.
pub const IGNORE_FILE: &str = ".ferryignore";
/// The cache directory tag (<https://bford.info/cachedir/>).
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG";
/// What a valid `CACHEDIR.TAG` starts with.
pub const CACHEDIR_SIGNATURE: &[u8; 43] = b"Signature: 8a477f597d28d172789f06886806bc55";
/// The largest `.ferryignore` or `--exclude-file` read.
pub const MAX_RULES_FILE: u64 = 1024 * 1024;

/// Why exclusion rules could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The `--exclude-file` cannot be read.
    #[error("cannot read the exclude file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The `--exclude-file` is too big to be a list of patterns.
    #[error("the exclude file {} is larger than {MAX_RULES_FILE} bytes: is it a list of patterns?", path.display())]
    TooBig {
        /// The file.
        path: PathBuf,
    },
    /// A pattern is not valid.
    #[error("exclude pattern {pattern:?} ({from}) is not valid; see gitignore(5) for the syntax")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Where it was given: `--exclude` or the file and line.
        from: String,
        /// What is wrong with it.
        source: ignore::Error,
    },
}

/// What to leave out of a scan, built once per sender.
#[derive(Debug, Clone, Default)]
pub struct ExcludeRules {
    /// `--exclude-file` and `--exclude` patterns, from the source root.
    pub(super) global: Option<Arc<Gitignore>>,
    /// Read `.ferryignore` files (always on for a sender; off for tests of the
    /// other rules alone).
    pub(super) ignore_files: bool,
    /// Skip directories holding a valid `CACHEDIR.TAG`.
    pub exclude_caches: bool,
    /// Skip directories holding an entry of one of these names.
    pub exclude_if_present: Vec<PathBuf>,
    /// Do not descend into other filesystems.
    pub one_file_system: bool,
}

impl ExcludeRules {
    /// Rules with `.ferryignore` files read and the given patterns:
    /// `file` (`--exclude-file`) first, then `patterns` (`--exclude`, which
    /// thus win over the file's lines).
    pub fn new(patterns: &[String], file: Option<&Path>) -> Result<ExcludeRules, RulesError> {
        let mut builder = GitignoreBuilder::new(".");
        let mut any = false;
        if let Some(path) = file {
            let read_err = |source| RulesError::Read {
                path: path.to_owned(),
                source,
            };
            let size = std::fs::metadata(path).map_err(read_err)?.len();
            if size > MAX_RULES_FILE {
                return Err(RulesError::TooBig {
                    path: path.to_owned(),
                });
            }
            let text = std::fs::read(path).map_err(read_err)?;
            for (n, line) in lines(&text) {
                let from = format!("{} line {n}", path.display());
                add(&mut builder, &line, &from)?;
                any = true;
            }
        }
        for pattern in patterns {
            add(&mut builder, pattern, "--exclude")?;
            any = true;
        }
        let global = if any {
            let built = builder.build().map_err(|source| RulesError::Pattern {
                pattern: String::new(),
                from: "--exclude".into(),
                source,
            })?;
            Some(Arc::new(built))
        } else {
            None
        };
        Ok(ExcludeRules {
            global,
            ignore_files: true,
            ..ExcludeRules::default()
        })
    }

    /// Whether the walk must look into each directory it descends into
    /// before listing it (for a marker file).
    pub(super) fn has_markers(&self) -> bool {
        self.exclude_caches || !self.exclude_if_present.is_empty()
    }

    /// Whether `.ferryignore` files are read.
    pub(super) fn reads_ignore_files(&self) -> bool {
        self.ignore_files
    }
}

/// The lines of a rules file with their numbers (a BOM at the start is
/// dropped, as git does; bytes that are not UTF-8 are replaced).
fn lines(text: &[u8]) -> impl Iterator<Item = (usize, String)> + '_ {
    let text = text.strip_prefix("\u{feff}".as_bytes()).unwrap_or(text);
    text.split(|b| *b == b'\n').enumerate().map(|(i, line)| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        (i + 1, String::from_utf8_lossy(line).into_owned())
    })
}

fn add(builder: &mut GitignoreBuilder, line: &str, from: &str) -> Result<(), RulesError> {
    builder
        .add_line(None, line)
        .map(|_| ())
        .map_err(|source| RulesError::Pattern {
            pattern: line.to_string(),
            from: from.to_string(),
            source,
        })
}

/// The patterns of the `.ferryignore` files of one directory and those
/// above it: a chain from the deepest file up.
#[derive(Debug)]
pub(super) struct DirRules {
    /// The directory holding the file, relative to the root (empty: root).
    dir: Vec<u8>,
    matcher: Gitignore,
    parent: Option<Arc<DirRules>>,
}

/// A `.ferryignore` file that was read, and its bad lines.
pub(super) struct Parsed {
    /// The chain with this directory's file in front.
    pub rules: Arc<DirRules>,
    /// Lines that are not valid patterns: `(line number, message)`.
    pub bad: Vec<(usize, String)>,
}

/// Adds the `.ferryignore` of directory `dir` (content `text`) in front of
/// `parent`.
pub(super) fn with_ignore_file(parent: Option<Arc<DirRules>>, dir: &[u8], text: &[u8]) -> Parsed {
    let mut builder = GitignoreBuilder::new(".");
    let mut bad = Vec::new();
    for (n, line) in lines(text) {
        if let Err(err) = builder.add_line(None, &line) {
            bad.push((n, format!("{line:?} is not a valid pattern: {err}")));
        }
    }
    let matcher = builder.build().unwrap_or_else(|err| {
        bad.push((0, format!("patterns ignored: {err}")));
        Gitignore::empty()
    });
    Parsed {
        rules: Arc::new(DirRules {
            dir: dir.to_vec(),
            matcher,
            parent,
        }),
        bad,
    }
}

/// Whether `path` (relative to the root; a directory if `is_dir`) is
/// excluded by the `.ferryignore` chain `dirs` or the global patterns.
pub(super) fn is_excluded(
    rules: &ExcludeRules,
    dirs: Option<&Arc<DirRules>>,
    path: &[u8],
    is_dir: bool,
) -> bool {
    let mut next = dirs;
    while let Some(node) = next {
        let below = if node.dir.is_empty() {
            Some(path)
        } else {
            path.strip_prefix(node.dir.as_slice())
                .and_then(|p| p.strip_prefix(b"/"))
        };
        if let Some(below) = below {
            match node
                .matcher
                .matched(Path::new(OsStr::from_bytes(below)), is_dir)
            {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        next = node.parent.as_ref();
    }
    match &rules.global {
        Some(global) => global
            .matched(Path::new(OsStr::from_bytes(path)), is_dir)
            .is_ignore(),
        None => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly
mod tests {
    use super::*;

    fn rules(patterns: &[&str]) -> ExcludeRules {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        ExcludeRules::new(&patterns, None).unwrap()
    }

    #[test]
    fn global_patterns_follow_gitignore_syntax() {
        let r = rules(&["*.o", "/top", "build/", "a/**/z", "!keep.o"]);
        let x = |p: &str, d| is_excluded(&r, None, p.as_bytes(), d);
        assert!(x("f.o", false) && x("deep/f.o", false));
        assert!(!x("keep.o", false) && !x("deep/keep.o", false));
        assert!(x("top", false) && !x("sub/top", false));
        assert!(x("build", true) && x("sub/build", true));
        assert!(!x("build", false), "a trailing / matches directories only");
        assert!(x("a/z", false) && x("a/b/c/z", false) && !x("b/a/z", false));
    }

    #[test]
    fn deeper_files_win_and_negation_reincludes() {
        let r = rules(&["*.log"]);
        let root = with_ignore_file(None, b"", b"*.tmp\n/anchored\n").rules;
        let sub = with_ignore_file(Some(root), b"sub", b"!*.log\n!x.tmp\n/anchored\n").rules;
        let x = |p: &str| is_excluded(&r, Some(&sub), p.as_bytes(), false);
        assert!(!x("sub/a.log"), "the deeper file re-includes");
        assert!(!x("sub/x.tmp"));
        assert!(x("sub/y.tmp"));
        assert!(x("sub/anchored") && x("anchored"));
        assert!(!x("sub/deeper/anchored"));
        // Outside `sub`, only the root file and the global patterns apply.
        assert!(x("other/a.log") && x("other/x.tmp"));
    }

    #[test]
    fn bad_patterns_and_files_are_reported() {
        let err = ExcludeRules::new(&["a/**[".to_string()], None);
        // An unclosed class is taken literally, as git does.
        assert!(err.is_ok());
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = ExcludeRules::new(&[], Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        let file = dir.path().join("rules");
        std::fs::write(&file, b"\xef\xbb\xbf*.bak\r\n# comment\n\n!x.bak\n").unwrap();
        let r = ExcludeRules::new(&[], Some(&file)).unwrap();
        assert!(is_excluded(&r, None, b"a.bak", false));
        assert!(!is_excluded(&r, None, b"x.bak", false));
        assert!(!is_excluded(&r, None, b"comment", false));
    }
}
