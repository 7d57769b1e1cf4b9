//! A receiver stopped and started again on the same port at once, as the
//! launcher's Stop then Start does.

use std::net::SocketAddr;

use anyhow::Context;
use ferry_agent::identity::Identity;
use ferry_agent::receiver::{Admission, Receiver};
use ferry_agent::store::Store;
use ferry_agent::transport;
use ferry_proto::Message;
use tokio_util::sync::CancellationToken;

/// Regression: `serve` returned before quinn had closed the UDP socket, so
/// a receiver started on the same port right after failed with "Address
/// already in use" now and then. Each round's store is opened beforehand,
/// so nothing slow sits between the stop and the next bind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_receiver_frees_its_port_for_an_immediate_restart() -> anyhow::Result<()> {
    crate::util::trace();
    let dir = tempfile::tempdir()?;
    let server = Identity::load_or_create(&dir.path().join("rstate"))?;
    let client = Identity::load_or_create(&dir.path().join("laptop-state"))?;
    let admission = Admission {
        allow: vec![client.id],
        pairing_secret: None,
    };
    let open = |round: usize| {
        let store_dir = dir.path().join(format!("store-{round}"));
        tokio::task::spawn_blocking(move || Store::open(&store_dir))
    };
    let mut addr: SocketAddr = "127.0.0.1:0".parse()?;
    let mut store = open(0).await??;
    for round in 0..50 {
        let receiver = Receiver::bind_with(
            Identity::load_or_create(&dir.path().join("rstate"))?,
            store,
            addr,
            4,
            admission.clone(),
        )
        .with_context(|| format!("round {round}: starting again on {addr}"))?;
        anyhow::ensure!(receiver.id() == server.id);
        addr = receiver.local_addr()?;
        let token = CancellationToken::new();
        let serving = tokio::spawn(receiver.serve(token.clone()));
        // An admitted sender is connected while the receiver stops: its
        // connection is among what holds the socket.
        let endpoint = transport::client_endpoint(&client, addr)?;
        let conn = transport::connect(&endpoint, addr).await?;
        let (_control, answer) = crate::util::hello(&conn, "laptop", None).await?;
        anyhow::ensure!(
            matches!(answer, Message::Welcome(_)),
            "round {round}: {answer:?}"
        );
        store = open(round + 1).await??;
        token.cancel();
        serving.await?;
    }
    Ok(())
}
