//! The receiver's wall clock jumps back between runs.
//!
//! The system clock is shared with everything else on the machine, so the
//! test does not change it: it rewrites the recorded times of the first run
//! an hour into the future in the catalog (what a clock that was an hour
//! fast and then corrected would have recorded), and runs on.

use ferry_agent::receiver::Admission;
use ferry_proto::{At, Name, RelPath};
use ferry_tests::tree;

use crate::util::{send_config, TestReceiver, TestSender};

const HOUR_MS: i64 = 3_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_recorded_across_a_clock_jumping_back_are_all_kept_in_order() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), super::SECRET).await?;
    let addr = receiver.addr;
    let sender = TestSender::new(dir.path(), "laptop")?;
    let config = super::sender_config(&sender, addr)?;
    let contents = ["first", "second", "third"];

    tree::write(&sender.source, "f.txt", contents[0])?;
    let first = send_config(&config).await?.run_id.expect("a run id");
    receiver.stop().await?;
    // The first run's times, an hour ahead of the clock that follows.
    let catalog = dir.path().join("store/.ferry/catalog.db");
    let conn = rusqlite::Connection::open(&catalog)?;
    let changed = conn.execute(
        "UPDATE runs SET started_ms = started_ms + ?1, finished_ms = finished_ms + ?1 WHERE id = ?2",
        rusqlite::params![HOUR_MS, first as i64],
    )?;
    assert_eq!(changed, 1);
    drop(conn);

    let admission = Admission {
        allow: vec![],
        pairing_secret: Some(super::SECRET.as_bytes().to_vec()),
    };
    let receiver = TestReceiver::start_at(dir.path(), addr, 8, admission).await?;
    let mut runs = vec![first];
    for content in &contents[1..] {
        tree::write(&sender.source, "f.txt", content)?;
        let summary = send_config(&config).await?;
        assert_eq!(summary.errors, 0, "{summary:?}");
        runs.push(summary.run_id.expect("a run id"));
    }
    tree::assert_same(&sender.source, &receiver.mirror("laptop", "docs"))?;
    let store = receiver.store.clone();

    // Every run listed once, newest (by id) first, whatever its time says.
    let listed = store.runs(None)?;
    let ids: Vec<u64> = listed.iter().map(|r| r.id).collect();
    let mut expected = runs.clone();
    expected.reverse();
    assert_eq!(ids, expected, "{listed:?}");
    assert!(listed.iter().all(|r| r.status == "complete"), "{listed:?}");
    assert!(
        listed[2].started_ms > listed[0].started_ms,
        "the clock did not jump back: {listed:?}"
    );

    // The state as of each run holds that run's content.
    let sender_record = store
        .sender_by_name(&Name::new("laptop")?)?
        .expect("registered");
    let ns = store.namespace(&sender_record, &Name::new("docs")?);
    let path = RelPath::from_bytes("f.txt")?;
    for (run, content) in runs.iter().zip(contents) {
        let (resolved, tree) = store.tree(&ns, At::Run(*run), &[])?;
        assert_eq!(resolved, Some(*run));
        let file = tree
            .iter()
            .find(|v| v.path == path)
            .expect("f.txt in the tree");
        assert_eq!(
            std::fs::read(&file.location)?,
            content.as_bytes(),
            "run {run}"
        );
    }
    // Three versions, each with its own bytes, one current.
    let versions = store.versions(&ns, &path)?;
    assert_eq!(versions.len(), 3, "{versions:?}");
    assert_eq!(versions.iter().filter(|v| v.current).count(), 1);
    let mut bytes: Vec<Vec<u8>> = versions
        .iter()
        .map(|v| std::fs::read(&v.location))
        .collect::<Result<_, _>>()?;
    bytes.sort();
    let mut want: Vec<Vec<u8>> = contents.iter().map(|c| c.as_bytes().to_vec()).collect();
    want.sort();
    assert_eq!(bytes, want);
    // Asking by time: the latest run whose recorded end is not after it.
    let now_ms = listed[0].finished_ms.expect("finished");
    let (resolved, _) = store.tree(&ns, At::Time(now_ms), &[])?;
    assert_eq!(resolved, Some(runs[2]));
    drop(store);
    receiver.stop().await?;
    Ok(())
}
