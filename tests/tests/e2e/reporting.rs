//! What a run reports as its file data: the files' own size, and apart
//! from it what their content took on the wire, in the summary line, the
//! JSON summary, and the sender's and the receiver's history.

use std::path::Path;
use std::process::Command;

use ferry_agent::summary::human_bytes;
use ferry_tests::tree;

/// Runs `ferry ARGS`; returns its exit code, stdout and stderr.
async fn ferry(args: Vec<std::ffi::OsString>) -> anyhow::Result<(Option<i32>, String, String)> {
    let bin = crate::util::ferry_bin();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await??;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// 300 text files; returns the sum of their sizes.
fn text_files(source: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for i in 0..300u32 {
        let text: String = (0..100 + i)
            .map(|line| format!("{i}: line {line} of a plain text file\n"))
            .collect();
        total += text.len() as u64;
        tree::write(source, format!("notes/{i:03}.txt"), text)?;
    }
    Ok(total)
}

/// `ferry send --store` once, into `store`, with state in `state`.
fn send_args(source: &Path, store: &Path, state: &Path, json: bool) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "send".into(),
        "--source".into(),
        source.into(),
        "--store".into(),
        store.into(),
        "--state".into(),
        state.into(),
        "--name".into(),
        "laptop".into(),
        "--folder".into(),
        "docs".into(),
        "--once".into(),
    ];
    if json {
        args.push("--json".into());
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_data_is_the_files_own_size_and_the_wire_figure_is_reported_apart(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let source = d.join("src");
    let own = text_files(&source)?;
    let own_text = format!("{} of file data", human_bytes(own));

    // The JSON summary.
    let (code, stdout, stderr) =
        ferry(send_args(&source, &d.join("store"), &d.join("state"), true)).await?;
    assert_eq!(code, Some(0), "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim())?;
    let field = |name: &str| summary[name].as_u64().unwrap_or(u64::MAX);
    assert_eq!(field("files_sent"), 300, "{summary}");
    assert_eq!(
        field("bytes_file_data"),
        own,
        "the files' own size: {summary}"
    );
    assert_eq!(field("bytes_file_data_new"), own, "{summary}");
    let wire = field("bytes_file_data_wire");
    assert!(wire * 4 < own, "text compresses: {summary}");
    assert!(field("bytes_on_wire") > wire, "{summary}");

    // The summary line, from a first run of another sender.
    let (code, _, stderr) = ferry(send_args(
        &source,
        &d.join("store2"),
        &d.join("state2"),
        false,
    ))
    .await?;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(&own_text), "{stderr}");
    assert!(
        stderr.contains("on the wire (compression saved "),
        "{stderr}"
    );
    assert!(stderr.contains("on the wire in all"), "{stderr}");

    // The sender's own history.
    let state: std::ffi::OsString = d.join("state").into();
    let (code, stdout, stderr) =
        ferry(vec!["history".into(), "--state".into(), state.clone()]).await?;
    assert_eq!(code, Some(0), "{stderr}");
    let wire_text = format!("{own_text}, {} on the wire", human_bytes(wire));
    assert!(stdout.contains(&wire_text), "{wire_text:?} in {stdout}");
    let (_, stdout, _) = ferry(vec![
        "history".into(),
        "--state".into(),
        state,
        "--json".into(),
    ])
    .await?;
    let row: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap_or(""))?;
    assert_eq!(row["bytes_file_data"], own, "{row}");
    assert_eq!(row["bytes_file_data_wire"], wire, "{row}");

    // The receiver's history: the files' own size, and what it received.
    let store: std::ffi::OsString = d.join("store").into();
    let (code, stdout, stderr) =
        ferry(vec!["history".into(), "--store".into(), store.clone()]).await?;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&own_text), "{stdout}");
    assert!(stdout.contains("received on the wire"), "{stdout}");
    let (_, stdout, _) = ferry(vec![
        "history".into(),
        "--store".into(),
        store,
        "--json".into(),
    ])
    .await?;
    let row: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap_or(""))?;
    assert_eq!(row["bytes_file_data"], own, "{row}");
    assert!(row["bytes_received"].as_u64().unwrap_or(0) > wire, "{row}");
    Ok(())
}
