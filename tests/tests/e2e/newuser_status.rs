//! What a periodic sender's live status says it is doing (the launcher shows
//! it): connecting, sending, idle until the next run, or retrying and why,
//! never the last run's figures as if they were the current one's.

use std::time::{Duration, SystemTime};

use ferry_agent::config::SenderConfig;
use ferry_agent::sender;
use ferry_agent::status::{SenderPhase, SenderStatus};
use ferry_tests::tree;
use tokio_util::sync::CancellationToken;

use crate::util::{TestReceiver, TestSender};

const SECRET: &str = "status secret";

/// Waits (bounded) until the status is in a phase `want` accepts.
async fn phase_until(
    status: &SenderStatus,
    what: &str,
    want: impl Fn(&SenderPhase) -> bool,
) -> anyhow::Result<SenderPhase> {
    for _ in 0..3000 {
        let phase = status.phase();
        if want(&phase) {
            return Ok(phase);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("the sender never got to {what}: {:?}", status.phase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_whose_receiver_went_away_is_retrying_not_sending_or_idle() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = TestReceiver::with_secret(dir.path(), SECRET).await?;
    let addr = receiver.addr;
    let sender = TestSender::new(dir.path(), "laptop")?;
    tree::write(&sender.source, "a.txt", "alpha")?;
    let config = SenderConfig {
        every: Some("1h".into()),
        once: None,
        ..sender.with_secret(&receiver, SECRET)?
    };
    let status = SenderStatus::new();
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let seen = status.clone();
    let run = tokio::spawn(sender::run(
        config.settings()?,
        shutdown.clone(),
        status.clone(),
        // The phase while the attempt was going, as the attempt ended.
        move |r| {
            let _ = tx.send((
                seen.phase(),
                r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
            ));
        },
    ));

    // A run that reaches the receiver is sending once it has planned, and
    // idle until the next period afterwards.
    let (during, result) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the sender ended"))?;
    assert_eq!(result, Ok(()));
    assert!(during.is_sending(), "{during:?}");
    let idle = phase_until(&status, "idle", |p| {
        matches!(p, SenderPhase::Waiting { .. })
    })
    .await?;
    let SenderPhase::Waiting { next_run } = idle else {
        unreachable!()
    };
    assert!(
        next_run > SystemTime::now() + Duration::from_secs(50 * 60),
        "{idle:?}"
    );

    // The receiver goes away: the next attempt is connecting, never sending,
    // and then retrying with the reason.
    receiver.stop().await?;
    status.run_now();
    phase_until(&status, "connecting", |p| {
        matches!(
            p,
            SenderPhase::Connecting { .. } | SenderPhase::Retrying { .. }
        )
    })
    .await?;
    let (during, result) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the sender ended"))?;
    let error = result.expect_err("a run to a stopped receiver failed");
    assert!(
        matches!(during, SenderPhase::Connecting { .. }),
        "{during:?} while failing to connect"
    );
    let retrying = phase_until(&status, "retrying", |p| {
        matches!(p, SenderPhase::Retrying { .. })
    })
    .await?;
    let SenderPhase::Retrying { at, because } = retrying else {
        unreachable!()
    };
    assert_eq!(because, error);
    assert!(because.contains(&addr.to_string()), "{because}");
    // A backoff, not the period.
    assert!(
        at < SystemTime::now() + Duration::from_secs(10 * 60),
        "{at:?}"
    );

    shutdown.cancel();
    // It ends on request (with the last attempt's error) and says so.
    let last = tokio::time::timeout(Duration::from_secs(30), run).await??;
    assert!(last.is_err(), "{last:?}");
    assert_eq!(status.phase(), SenderPhase::Stopped);
    Ok(())
}
