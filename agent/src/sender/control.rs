//! The control stream, the sender's side: `Hello` (`HelloProtected` for an
//! encrypted or write-only folder) and the receiver's `Welcome` (or `Busy`,
//! `Refused`), then each batch of deletions (`Delete`, `Deleted`) and the
//! run's end (`Finish`, `Committed`). The message order is
//! [`machine::ControlSender`]'s; this driver does the I/O.
//!
//! ## Layout
//!
//! - `machine`: the control stream as a state machine without I/O.

pub mod machine;

use ferry_proto::{Hello, PathFailure, RelPath, RunReport, Welcome};

use super::{RunError, SenderContext};
use crate::config::FolderProtect;
use crate::identity::DeviceId;
use crate::index::Index;
use crate::link::Link;
use crate::stream::{Channel, StreamError};
use machine::{ControlEvent, ControlSender};

/// The control stream of a connection on which the receiver has welcomed
/// this sender.
pub(super) struct Admitted {
    pub receiver_id: DeviceId,
    pub control: ControlStream,
    pub welcome: Welcome,
}

/// The control stream, once admitted.
pub(super) struct ControlStream {
    channel: Channel,
    machine: ControlSender,
}

impl ControlStream {
    /// The receiver's answer to what was just sent.
    async fn event(&mut self) -> Result<ControlEvent, RunError> {
        let message = self.channel.recv.recv().await?;
        self.machine
            .on_message(message)
            .map_err(|v| RunError::Protocol(v.into()))
    }

    /// Asks the receiver to delete `paths` (it archives them); returns the
    /// ones it could not.
    pub async fn delete(&mut self, paths: Vec<RelPath>) -> Result<Vec<PathFailure>, RunError> {
        debug_assert!(self.machine.is_ready());
        let message = self.machine.delete(paths);
        self.channel.send.send(&message).await?;
        match self.event().await? {
            ControlEvent::Deleted { failed } => Ok(failed),
            _ => Err(StreamError::Closed.into()),
        }
    }

    /// Ends the run: the receiver records `report` and answers with the
    /// run's id.
    pub async fn finish(&mut self, report: RunReport) -> Result<u64, RunError> {
        debug_assert!(self.machine.is_ready());
        let message = self.machine.finish(report);
        self.channel.send.send(&message).await?;
        let run_id = match self.event().await? {
            ControlEvent::Committed { run_id } => run_id,
            _ => return Err(StreamError::Closed.into()),
        };
        self.channel.send.finish();
        Ok(run_id)
    }
}

/// Checks the receiver, says `Hello` and waits for `Welcome`: done while
/// the scan runs, since a receiver gives a sender only so long
/// ([`crate::receiver::HELLO_TIMEOUT`]) between connecting and `Hello`, and
/// scanning a tree of a million files can take longer.
pub(super) async fn admit(ctx: &SenderContext, link: &impl Link) -> Result<Admitted, RunError> {
    let receiver_id = link.peer()?;
    ctx.check_receiver(receiver_id)?;
    let pairing = match &ctx.settings.pairing_secret {
        Some(secret) => Some(ferry_proto::pairing_proof(
            secret,
            &link.pairing_material()?,
        )),
        None => None,
    };
    let (channel, last_run) = tokio::join!(link.open(), last_acked_run(ctx, receiver_id));
    let mut control = ControlStream {
        channel: channel?,
        machine: ControlSender::new(),
    };
    let hello = Hello {
        protocol: ferry_proto::PROTOCOL_VERSION,
        name: ctx.settings.name.clone(),
        folder: ctx.settings.folder.clone(),
        pairing,
        agent: format!("ferry {}", env!("CARGO_PKG_VERSION")),
        last_run: last_run?,
    };
    let hello = match &ctx.settings.protect {
        FolderProtect::Plain => control.machine.hello(hello),
        FolderProtect::Sealed { protection, .. } => {
            control.machine.hello_protected(hello, *protection)
        }
    };
    control.channel.send.send(&hello).await?;
    let welcome = match control.event().await? {
        ControlEvent::Admitted(welcome) => welcome,
        ControlEvent::Busy { retry_after } => return Err(RunError::Busy { retry_after }),
        ControlEvent::Refused { code, message, .. } => {
            return Err(RunError::Refused { code, message })
        }
        _ => return Err(StreamError::Closed.into()),
    };
    if welcome.paired {
        tracing::info!(receiver = %receiver_id, "paired with the receiver; later runs need no pairing secret");
    }
    Ok(Admitted {
        receiver_id,
        control,
        welcome,
    })
}

/// The index's name for what this run sends to: the receiver and folder.
pub(super) fn index_target(ctx: &SenderContext, receiver_id: DeviceId) -> String {
    format!("{}/{}", receiver_id, ctx.settings.folder.as_str())
}

/// Opens the index of this receiver and folder (kept in `ctx.index` for the
/// run) and reads the newest receiver run it recorded an acknowledgement of.
async fn last_acked_run(
    ctx: &SenderContext,
    receiver_id: DeviceId,
) -> Result<Option<u64>, RunError> {
    let target = index_target(ctx, receiver_id);
    let index_path = ctx.settings.state.join("index.db");
    let slot = ctx.index.clone();
    crate::tasks::blocking(move || {
        let mut slot = slot.lock().map_err(|_| RunError::IndexPoisoned)?;
        let index = match slot.take() {
            Some(index) if index.target() == target => index,
            _ => Index::open(&index_path, &target)?,
        };
        let run = index.acked_run()?;
        *slot = Some(index);
        Ok(run)
    })
    .await?
}
