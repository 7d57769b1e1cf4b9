//! What the `ferry` binary prints on stderr (issue 13, items 8 and 11):
//! one-shot commands are quiet by default and end with their summary on a
//! line of its own, `-v` logs INFO, `-q` prints errors only, a terminal gets
//! a progress bar that is cleared before the summary, and every subcommand's
//! `--help` has examples.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::util::ferry_bin;

/// Runs `ferry ARGS` with stdin closed and stdout and stderr piped.
fn ferry(args: &[OsString]) -> anyhow::Result<Output> {
    Ok(Command::new(ferry_bin())
        .args(args)
        .env_remove("FERRY_LOG")
        .stdin(Stdio::null())
        .output()?)
}

fn args(list: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    list.iter().map(|a| a.as_ref().to_os_string()).collect()
}

/// A source with a few files, in `dir/src`.
fn source(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub"))?;
    std::fs::write(src.join("a.txt"), b"alpha")?;
    std::fs::write(src.join("sub/b.bin"), vec![3u8; 100_000])?;
    Ok(src)
}

/// `ferry [pre] send --source S --store ST --state STATE [post]`.
fn send(dir: &Path, pre: &[&str], post: &[&str]) -> anyhow::Result<Output> {
    let src = dir.join("src");
    let mut a: Vec<OsString> = pre.iter().map(OsString::from).collect();
    a.extend(args(&[
        &"send",
        &"--source",
        &src,
        &"--store",
        &dir.join("store"),
        &"--state",
        &dir.join("state"),
    ]));
    a.extend(post.iter().map(OsString::from));
    ferry(&a)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Log lines (text format) at `level` in `stderr`.
fn log_lines<'a>(stderr: &'a str, level: &str) -> Vec<&'a str> {
    let tag = format!(" {level} ");
    stderr.lines().filter(|l| l.contains(&tag)).collect()
}

#[test]
fn a_one_shot_send_prints_no_info_logs_and_ends_with_its_summary_line() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    source(dir.path())?;
    let out = send(dir.path(), &[], &[])?;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(log_lines(&stderr, "INFO"), Vec::<&str>::new(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "only the summary: {stderr}");
    assert!(
        lines[0].starts_with("ferry: 2 sent, "),
        "the summary on a line of its own: {stderr}"
    );
    Ok(())
}

#[test]
fn verbose_logs_info_and_very_verbose_debug() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    source(dir.path())?;
    let out = send(dir.path(), &["-v"], &[])?;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!log_lines(&stderr, "INFO").is_empty(), "{stderr}");
    assert_eq!(log_lines(&stderr, "DEBUG"), Vec::<&str>::new(), "{stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("ferry: 2 sent, ")));

    std::fs::write(dir.path().join("src/a.txt"), b"beta")?;
    let out = send(dir.path(), &["-vv"], &[])?;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!log_lines(&stderr, "DEBUG").is_empty(), "{stderr}");
    Ok(())
}

#[test]
fn ferry_log_still_overrides_the_default() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let src = source(dir.path())?;
    let out = Command::new(ferry_bin())
        .args(args(&[
            &"send",
            &"--source",
            &src,
            &"--store",
            &dir.path().join("store"),
            &"--state",
            &dir.path().join("state"),
        ]))
        .env("FERRY_LOG", "info")
        .stdin(Stdio::null())
        .output()?;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!log_lines(&stderr, "INFO").is_empty(), "{stderr}");
    Ok(())
}

#[test]
fn quiet_prints_nothing_on_success_and_errors_on_failure() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    source(dir.path())?;
    let copies = dir.path().join("copies");
    let out = send(
        dir.path(),
        &["-q"],
        &["--keep-copies", &copies.to_string_lossy()],
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "-q: nothing when all went well");

    let restored = dir.path().join("restored");
    let out = ferry(&args(&[
        &"-q",
        &"restore",
        &"--from-copies",
        &copies,
        &"--to",
        &restored,
    ]))?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    let out = ferry(&args(&[
        &"-q",
        &"verify",
        &"--store",
        &dir.path().join("store"),
    ]))?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");

    let out = ferry(&args(&[
        &"-q",
        &"send",
        &"--source",
        &dir.path().join("no such dir"),
        &"--store",
        &dir.path().join("store"),
    ]))?;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("ferry: error: "), "{stderr}");
    Ok(())
}

#[test]
fn read_commands_print_no_info_logs_by_default() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    source(dir.path())?;
    let copies = dir.path().join("copies");
    let out = send(
        dir.path(),
        &[],
        &["--keep-copies", &copies.to_string_lossy()],
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let store = dir.path().join("store");
    let restored = dir.path().join("restored");
    let runs: [(Vec<OsString>, &str); 3] = [
        (
            args(&[&"restore", &"--from-copies", &copies, &"--to", &restored]),
            "ferry: restored ",
        ),
        (args(&[&"verify", &"--store", &store]), "ferry: verified "),
        (args(&[&"history", &"--store", &store]), ""),
    ];
    for (a, summary) in runs {
        let out = ferry(&a)?;
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{a:?}: {stderr}");
        assert_eq!(log_lines(&stderr, "INFO"), Vec::<&str>::new(), "{a:?}");
        if summary.is_empty() {
            assert_eq!(stderr, "", "{a:?}");
        } else {
            let lines: Vec<&str> = stderr.lines().collect();
            assert!(
                lines.len() == 1 && lines[0].starts_with(summary),
                "{a:?}: {stderr}"
            );
        }
    }
    Ok(())
}

/// What a terminal shows after `output` was written to it: carriage
/// returns, newlines, "erase line" and "cursor up" applied; other escape
/// sequences ignored.
fn screen(output: &str) -> Vec<String> {
    let mut lines: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = output.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => col = 0,
            '\n' => {
                row += 1;
                col = 0;
                if lines.len() <= row {
                    lines.push(Vec::new());
                }
            }
            '\x1b' => {
                if chars.peek() != Some(&'[') {
                    continue;
                }
                chars.next();
                let mut param = String::new();
                let mut command = None;
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() || c == '~' {
                        command = Some(c);
                        break;
                    }
                    param.push(c);
                }
                let n: usize = param.parse().unwrap_or(1);
                match command {
                    Some('K') if param == "2" => lines[row].clear(),
                    Some('K') => lines[row].truncate(col),
                    Some('A') => row = row.saturating_sub(n),
                    Some('B') => {
                        row += n;
                        while lines.len() <= row {
                            lines.push(Vec::new());
                        }
                    }
                    Some('G') => col = n.saturating_sub(1),
                    _ => {}
                }
            }
            c => {
                let line = &mut lines[row];
                if line.len() <= col {
                    line.resize(col, ' ');
                    line.push(c);
                } else {
                    line[col] = c;
                }
                col += 1;
            }
        }
    }
    lines
        .into_iter()
        .map(|l| l.into_iter().collect::<String>().trim_end().to_string())
        .collect()
}

#[test]
fn the_screen_model_applies_erases() {
    assert_eq!(
        screen("50% bar\r\x1b[2Kferry: 1 sent\r\n"),
        ["ferry: 1 sent", ""]
    );
    assert_eq!(screen("abc\rx"), ["xbc"]);
}

/// Quotes `arg` for `sh`.
fn sh_quote(arg: &std::ffi::OsStr) -> String {
    format!("'{}'", arg.to_string_lossy().replace('\'', r"'\''"))
}

#[test]
fn on_a_terminal_the_bar_is_cleared_before_the_summary() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let src = source(dir.path())?;
    // About 2 s at the rate limit: the bar is drawn several times.
    std::fs::write(src.join("big.bin"), vec![9u8; 2_000_000])?;
    let command = [
        ferry_bin().into_os_string(),
        "send".into(),
        "--source".into(),
        src.into_os_string(),
        "--store".into(),
        dir.path().join("store").into_os_string(),
        "--state".into(),
        dir.path().join("state").into_os_string(),
        "--compress".into(),
        "off".into(),
        "--limit-rate".into(),
        "1MB/s".into(),
    ]
    .iter()
    .map(|a| sh_quote(a))
    .collect::<Vec<_>>()
    .join(" ");
    // `script` (util-linux) runs the command with a pseudo-terminal as its
    // stdin, stdout and stderr, and copies what it printed to our stdout.
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("stty cols 160 rows 40; exec {command}"),
            "/dev/null",
        ])
        .env("TERM", "xterm")
        .env_remove("FERRY_LOG")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("running `script` (util-linux): {e}"))?;
    let raw = text(&out.stdout);
    assert!(out.status.success(), "{raw}{}", text(&out.stderr));
    assert!(
        raw.contains("% ") && raw.contains("/s, ETA "),
        "a bar with percent, rate and ETA was drawn: {raw:?}"
    );
    let shown: Vec<String> = screen(&raw).into_iter().filter(|l| !l.is_empty()).collect();
    assert_eq!(shown.len(), 1, "only the summary is left: {shown:#?}");
    assert!(shown[0].starts_with("ferry: 3 sent, "), "{shown:#?}");
    Ok(())
}

#[test]
fn every_subcommand_help_has_examples() -> anyhow::Result<()> {
    for sub in [
        "id", "receive", "send", "history", "versions", "restore", "verify",
    ] {
        let out = ferry(&args(&[&sub, &"--help"]))?;
        let help = text(&out.stdout);
        assert!(out.status.success(), "{sub} --help: {}", text(&out.stderr));
        assert!(help.contains("\nExamples:\n"), "{sub} --help:\n{help}");
        assert!(
            help.contains(&format!("    ferry {sub}")),
            "{sub} --help:\n{help}"
        );
    }
    let out = ferry(&args(&[&"send", &"--help"]))?;
    let help = text(&out.stdout);
    assert!(
        help.contains("ferry send --source DIR (--host HOST | --store DIR)"),
        "send's usage shows what it needs:\n{help}"
    );
    Ok(())
}

#[test]
fn a_receiver_still_logs_info_by_default() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("receiver.err");
    let mut child = Command::new(ferry_bin())
        .args(args(&[
            &"receive",
            &"--host",
            &"127.0.0.1",
            &"--port",
            &"0",
            &"--store",
            &dir.path().join("store"),
            &"--state",
            &dir.path().join("rstate"),
        ]))
        .env_remove("FERRY_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let listening = crate::util::poll_until(std::time::Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains(" INFO ").then_some(text)
    });
    let _ = child.kill();
    let _ = child.wait();
    let text = listening.unwrap_or_else(|| std::fs::read_to_string(&log).unwrap_or_default());
    assert!(
        text.contains(" INFO ") && text.contains("receiver listening"),
        "a service logs INFO by default: {text}"
    );
    Ok(())
}
