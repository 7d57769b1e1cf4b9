//! Ctrl-C and SIGTERM reach a `ferry receive` process from the moment it
//! says it is listening.

use std::time::Duration;

use crate::crash::Setup;

/// Regression: the signal handlers were registered by a task spawned after
/// "receiver listening" was printed; a Ctrl-C sent at once (as a supervisor
/// or a test does) was missed under load and the receiver never stopped.
/// Each round interrupts a fresh receiver as soon as it says it listens.
#[test]
fn a_receiver_interrupted_as_soon_as_it_listens_stops_cleanly() -> anyhow::Result<()> {
    crate::util::trace();
    let setup = Setup::new()?;
    for round in 0..20 {
        let mut receiver = setup.receiver(&format!("receiver {round}"))?;
        receiver.interrupt()?;
        let status = receiver.exit_status(Duration::from_secs(30))?;
        anyhow::ensure!(
            status.success(),
            "round {round}: receiver exit {status}; stderr:\n{}",
            receiver.stderr()
        );
        anyhow::ensure!(
            receiver.stderr().contains("receiver stopped"),
            "round {round}: no clean shutdown; stderr:\n{}",
            receiver.stderr()
        );
    }
    Ok(())
}
