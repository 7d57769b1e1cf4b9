//! Rendering an error with its causes on one line, each cause once.
//!
//! Ferry's error enums never print the error they wrap (DESIGN.md,
//! "Errors"): the wrapped error is a `#[source]`. `{e}` alone then says what
//! failed but not why; [`chain`] says both, for logs and the summary's
//! problem lines, the way `{:#}` does for anyhow in `main`.

use std::error::Error;

/// `e` and each of its causes, joined with `": "`. A cause whose text the
/// line already holds (a third-party error that prints its own source) is
/// left out, so no cause appears twice.
pub fn chain(e: &dyn Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// [`chain`] as a `Display`, for format strings and logs:
/// `tracing::warn!("not sent: {}", Chain(&e))`.
pub struct Chain<'a>(pub &'a dyn Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&chain(self.0))
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;

    use super::*;
    use crate::config::ConfigError;
    use crate::copies::CopiesError;
    use crate::embedded::EmbeddedError;
    use crate::identity::IdentityError;
    use crate::index::guard::MassDelete;
    use crate::index::IndexError;
    use crate::pins::PinError;
    use crate::reader::ConnectError;
    use crate::receiver::ReceiverError;
    use crate::scan::ScanError;
    use crate::sender::{RunError, SendEntryError, SenderError, SourceError};
    use crate::store::RetentionError;
    use crate::store::StoreError;
    use crate::stream::StreamError;
    use crate::tls::TlsError;
    use crate::transport::TransportError;
    use crate::units::SizeError;

    #[derive(Debug, thiserror::Error)]
    #[error("could not open {path}")]
    struct Open {
        path: String,
        source: io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {source}")]
    struct Echoing {
        source: Open,
    }

    #[test]
    fn chain_names_each_cause_once() {
        let open = Open {
            path: "/x".into(),
            source: io::Error::other("disk on fire"),
        };
        assert_eq!(chain(&open), "could not open /x: disk on fire");
        let echo = Echoing { source: open };
        assert_eq!(chain(&echo), "outer: could not open /x: disk on fire");
    }

    /// Asserts that `{:#}` of `e` (anyhow's rendering in `main`) and
    /// [`chain`] hold the text of each cause exactly once, and lead with
    /// `e`'s own message.
    pub(crate) fn assert_each_cause_once(e: impl std::error::Error + Send + Sync + 'static) {
        let own = e.to_string();
        let mut causes = Vec::new();
        let mut cause = e.source();
        while let Some(c) = cause {
            causes.push(c.to_string());
            cause = c.source();
        }
        let line = chain(&e);
        let alternate = format!("{:#}", anyhow::Error::new(e));
        for rendered in [&alternate, &line] {
            assert!(rendered.starts_with(&own), "{rendered}");
            for c in &causes {
                assert_eq!(
                    rendered.matches(c.as_str()).count(),
                    1,
                    "{c:?} in {rendered}"
                );
            }
        }
    }

    fn os(kind: io::ErrorKind) -> io::Error {
        io::Error::from(kind)
    }

    fn addr_in_use() -> io::Error {
        io::Error::from_raw_os_error(98)
    }

    #[test]
    fn error_chains_name_each_cause_once() {
        let addr = "127.0.0.1:7878".parse().expect("an address");
        let path = PathBuf::from("/s/x");
        let listen = || TransportError::Listen {
            addr,
            source: addr_in_use(),
        };
        assert_each_cause_once(listen());
        assert_each_cause_once(ReceiverError::Transport(listen()));
        assert_each_cause_once(RunError::Transport(listen()));
        assert_each_cause_once(SenderError::Run(RunError::Transport(listen())));
        assert_each_cause_once(SenderError::Embedded(EmbeddedError::Receiver(
            ReceiverError::Transport(listen()),
        )));
        assert_each_cause_once(TransportError::Resolve {
            host: "h".into(),
            source: os(io::ErrorKind::NotFound),
        });
        let mass = || MassDelete {
            deleting: 30,
            indexed: 40,
            max_percent: 50,
        };
        assert_each_cause_once(SenderError::Run(RunError::MassDelete(mass())));
        let lost = || {
            StreamError::Read(
                quinn::ReadError::ConnectionLost(quinn::ConnectionError::TimedOut).into(),
            )
        };
        assert_each_cause_once(RunError::Protocol(lost()));
        assert_each_cause_once(RunError::Connection(quinn::ConnectionError::Reset));
        assert_each_cause_once(SendEntryError::Stream(lost()));
        assert_each_cause_once(SendEntryError::Source(SourceError::Read(os(
            io::ErrorKind::PermissionDenied,
        ))));
        assert_each_cause_once(ConnectError::Protocol(lost()));
        assert_each_cause_once(ConnectError::Transport(listen()));
        let store = || StoreError::Io {
            action: "write",
            path: path.clone(),
            source: os(io::ErrorKind::StorageFull),
        };
        assert_each_cause_once(store());
        assert_each_cause_once(RetentionError::Store(store()));
        assert_each_cause_once(SenderError::Embedded(EmbeddedError::Store(store())));
        assert_each_cause_once(ReceiverError::Store(store()));
        assert_each_cause_once(PinError::Read {
            path: path.clone(),
            source: os(io::ErrorKind::PermissionDenied),
        });
        assert_each_cause_once(IdentityError::Read {
            path: path.clone(),
            source: os(io::ErrorKind::PermissionDenied),
        });
        assert_each_cause_once(ConfigError::Read {
            path: path.clone(),
            source: os(io::ErrorKind::NotFound),
        });
        assert_each_cause_once(CopiesError::Open {
            path: path.clone(),
            source: os(io::ErrorKind::NotFound),
        });
        assert_each_cause_once(ScanError::Root {
            root: path.clone(),
            source: os(io::ErrorKind::NotFound),
        });
        assert_each_cause_once(IndexError::CreateDir {
            path: path.clone(),
            source: os(io::ErrorKind::PermissionDenied),
        });
        assert_each_cause_once(RunError::Index(IndexError::CreateDir {
            path,
            source: os(io::ErrorKind::PermissionDenied),
        }));
    }

    #[test]
    fn embedded_config_and_tls_chains_name_each_cause_once() {
        let addr = "127.0.0.1:7878".parse().expect("an address");
        let path = PathBuf::from("/s/x");
        let listen = || TransportError::Listen {
            addr,
            source: addr_in_use(),
        };
        assert_each_cause_once(EmbeddedError::Store(StoreError::Io {
            action: "create",
            path: path.clone(),
            source: os(io::ErrorKind::PermissionDenied),
        }));
        assert_each_cause_once(EmbeddedError::Receiver(ReceiverError::Transport(listen())));
        assert_each_cause_once(EmbeddedError::Identity(IdentityError::Read {
            path: path.clone(),
            source: os(io::ErrorKind::PermissionDenied),
        }));
        assert_each_cause_once(ConfigError::Secret {
            path,
            source: os(io::ErrorKind::NotFound),
        });
        let tls = || TlsError::Config(rustls::Error::General("no usable key".into()));
        assert_each_cause_once(tls());
        assert_each_cause_once(TransportError::Tls(tls()));
        assert_each_cause_once(SizeError::UnknownUnit {
            text: "10 parsecs".into(),
            unit: "parsecs".into(),
        });
    }
}
