//! QUIC endpoints, connecting, and the transport tuning.
//!
//! The transport is tuned for LAN throughput: large flow-control windows
//! (measured +19% on loopback over quinn's defaults, see FACTS.md) and MTU
//! discovery up to [`MAX_UDP_PAYLOAD`]. The TLS side (who is trusted, and
//! how) is [`crate::tls`]'s, a leaf below this module.
//!
//! ## Layout
//!
//! - this file: the tuning, the endpoints of both roles, connecting and
//!   resolving.
//! - `released`: a receiver's UDP socket that tells when it is closed
//!   ([`SocketReleased`]).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::identity::Identity;
use crate::tls::{self, TlsError};

mod released;
pub use released::SocketReleased;

/// The server name a sender puts in its TLS ClientHello. Receivers ignore it:
/// trust comes from the pinned device id, not from a name.
pub const SERVER_NAME: &str = "ferry";
/// Flow-control window of one stream (bytes the peer may send ahead).
pub const STREAM_RECEIVE_WINDOW: u32 = 4 * 1024 * 1024;
/// Flow-control window of the whole connection, over all streams. It bounds
/// what a receiver buffers when its disk is slower than the network: at
/// 64 MiB a receiver busy with chunked content peaked at 72 MiB RSS on a
/// 1 GiB first sync; at 8 MiB, under 50 MiB, about as fast on loopback.
pub const CONNECTION_RECEIVE_WINDOW: u32 = 8 * 1024 * 1024;
/// Bytes this side keeps in flight unacknowledged over all streams. It is
/// also what a sender buffers: at 16 MiB a 1 GiB first sync over loopback
/// ran as fast as at 64 MiB, with the sender's peak RSS at 42 MiB instead
/// of 95-103 MiB.
pub const SEND_WINDOW: u64 = 16 * 1024 * 1024;
/// Largest UDP payload a sender uses where the path allows it, and the
/// largest either side accepts. quinn's MTU discovery stops at 1452
/// (Ethernet); over loopback and jumbo-frame LANs a sender goes up to 4000
/// bytes: on a 1 GiB first sync over loopback, 2.1-2.3 s instead of
/// 2.5-3.2 s, a quarter less CPU on each side, and 1.3 % fewer bytes on
/// the wire. Larger packets (8952) lost bursts on loopback, so that quinn's
/// black-hole detection fell back to 1200-byte packets for the rest of the
/// run. See [`sender_transport_config`].
pub const MAX_UDP_PAYLOAD: u16 = 4000;
/// Bidirectional streams the peer may have open at once (one per file in flight).
pub const MAX_CONCURRENT_BIDI_STREAMS: u32 = 256;
/// Unidirectional streams the peer may open: Ferry uses none.
pub const MAX_CONCURRENT_UNI_STREAMS: u32 = 0;
/// A connection with no traffic for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Interval of keep-alive packets, well below [`IDLE_TIMEOUT`].
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(4);
/// Longest a sender waits for the QUIC/TLS handshake with a receiver.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong setting up or using a QUIC endpoint.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The receiver could not listen on its address.
    #[error("could not listen on {addr} (is another receiver running on this port?)")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The sender could not open a local UDP socket.
    #[error("could not open a local UDP socket on {addr} to reach {remote}")]
    ClientSocket {
        /// The local address.
        addr: SocketAddr,
        /// The receiver that was to be reached.
        remote: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// A connection attempt could not even start (bad local setup).
    #[error("could not reach the receiver at {addr}")]
    Start {
        /// The receiver.
        addr: SocketAddr,
        /// What quinn said.
        source: quinn::ConnectError,
    },
    /// The handshake failed.
    #[error("could not reach the receiver at {addr}")]
    Handshake {
        /// The receiver.
        addr: SocketAddr,
        /// What quinn said.
        source: quinn::ConnectionError,
    },
    /// The handshake did not finish in time.
    #[error(
        "could not reach the receiver at {addr}: no answer within {}s \
         (is it running, and does a firewall allow UDP to that port?)",
        HANDSHAKE_TIMEOUT.as_secs()
    )]
    HandshakeTimeout {
        /// The receiver.
        addr: SocketAddr,
    },
    /// A host name could not be resolved.
    #[error("could not resolve the host {host:?}")]
    Resolve {
        /// The host as given.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// A host name resolved to no address.
    #[error("the host {host:?} has no address")]
    NoAddress {
        /// The host as given.
        host: String,
    },
}

/// The receiver's QUIC server configuration: [`tls::server_config`] with
/// Ferry's transport ([`transport_config`]).
pub fn server_config(identity: &Identity) -> Result<quinn::ServerConfig, TlsError> {
    let mut config = tls::server_config(identity)?;
    config.transport_config(transport_config());
    Ok(config)
}

/// The transport configuration shared by both roles.
pub fn transport_config() -> Arc<TransportConfig> {
    transport_config_with_receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW))
}

/// [`transport_config`] with another connection receive window: a receiver
/// with a bandwidth limit starts every connection with a small one, so that
/// no sender gets a large burst before the limit applies.
pub fn transport_config_with_receive_window(window: VarInt) -> Arc<TransportConfig> {
    Arc::new(base_config(window))
}

fn base_config(window: VarInt) -> TransportConfig {
    let mut config = TransportConfig::default();
    config
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(window)
        .send_window(SEND_WINDOW)
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_CONCURRENT_BIDI_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_CONCURRENT_UNI_STREAMS))
        .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(
            // Milliseconds; 30 000 fits a u32.
            IDLE_TIMEOUT.as_millis() as u32,
        ))))
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    config
}

/// The transport of a sender's connection to `remote`. Packet size is
/// chosen from what this machine knows of the path rather than probed up
/// from 1200 bytes: every probe is a padded packet, and a search up to 4000
/// costs about 30 KB per connection, more than half a one-byte delta.
///
/// - to a loopback address, the path is this machine: packets of
///   [`MAX_UDP_PAYLOAD`] from the start, no probes;
/// - where the route's MTU (the kernel's, for the outgoing interface) is
///   larger than Ethernet's, MTU discovery searches up to it (at most
///   [`MAX_UDP_PAYLOAD`]): a jumbo-frame LAN, if every hop has jumbo frames;
/// - elsewhere quinn's default discovery, up to 1452.
pub fn sender_transport_config(remote: SocketAddr) -> Arc<TransportConfig> {
    let mut config = base_config(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW));
    let header = match remote {
        SocketAddr::V4(_) => 28,
        SocketAddr::V6(_) => 48,
    };
    if remote.ip().is_loopback() {
        config.initial_mtu(MAX_UDP_PAYLOAD);
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(MAX_UDP_PAYLOAD);
        config.mtu_discovery_config(Some(mtu));
    } else if let Some(route) = route_mtu(remote) {
        let payload = route.saturating_sub(header).min(MAX_UDP_PAYLOAD as u32) as u16;
        if payload > 1452 {
            let mut mtu = quinn::MtuDiscoveryConfig::default();
            mtu.upper_bound(payload);
            config.mtu_discovery_config(Some(mtu));
        }
    }
    Arc::new(config)
}

/// The MTU of the route to `remote` as the kernel knows it (the outgoing
/// interface's, or a route's own), from a UDP socket connected to it; `None`
/// where it cannot be read.
fn route_mtu(remote: SocketAddr) -> Option<u32> {
    let local = match remote {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = std::net::UdpSocket::bind(local).ok()?;
    socket.connect(remote).ok()?;
    match remote {
        SocketAddr::V4(_) => rustix::net::sockopt::ip_mtu(&socket),
        SocketAddr::V6(_) => rustix::net::sockopt::ipv6_mtu(&socket),
    }
    .ok()
}

/// The endpoint configuration of both roles: datagrams up to
/// [`MAX_UDP_PAYLOAD`] accepted.
fn endpoint_config() -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::default();
    // Within quinn's bounds (1200..=65527), so this cannot fail.
    let _ = config.max_udp_payload_size(MAX_UDP_PAYLOAD);
    config
}

/// A receiver's endpoint listening on `addr`. Must be called within a tokio
/// runtime.
pub fn server_endpoint(
    identity: &Identity,
    addr: SocketAddr,
) -> Result<quinn::Endpoint, TransportError> {
    server_endpoint_on(identity, listen_socket(addr)?)
}

/// Binds the receiver's UDP socket at `addr`, before anything else is set
/// up: a taken port then fails the start with nothing created.
pub fn listen_socket(addr: SocketAddr) -> Result<std::net::UdpSocket, TransportError> {
    udp_socket(addr).map_err(|source| TransportError::Listen { addr, source })
}

/// The receiver's endpoint on a socket from [`listen_socket`].
pub fn server_endpoint_on(
    identity: &Identity,
    socket: std::net::UdpSocket,
) -> Result<quinn::Endpoint, TransportError> {
    let config = server_config(identity)?;
    let addr = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    let listen = |source| TransportError::Listen { addr, source };
    let runtime = Arc::new(quinn::TokioRuntime);
    quinn::Endpoint::new(endpoint_config(), Some(config), socket, runtime).map_err(listen)
}

/// The receiver's endpoint on a socket from [`listen_socket`], with what
/// tells when the socket is closed again (see [`SocketReleased`]): a
/// receiver stops only then, so it can be restarted on the same port at
/// once. Must be called inside a tokio runtime.
pub fn server_endpoint_released(
    identity: &Identity,
    socket: std::net::UdpSocket,
) -> Result<(quinn::Endpoint, SocketReleased), TransportError> {
    use quinn::Runtime;
    let config = server_config(identity)?;
    let addr = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    let listen = |source| TransportError::Listen { addr, source };
    let runtime = Arc::new(quinn::TokioRuntime);
    let (socket, released) = released::track(runtime.wrap_udp_socket(socket).map_err(listen)?);
    let endpoint =
        quinn::Endpoint::new_with_abstract_socket(endpoint_config(), Some(config), socket, runtime)
            .map_err(listen)?;
    Ok((endpoint, released))
}

/// Socket buffer size asked for (the kernel caps it at `net.core.rmem_max`
/// and `wmem_max`). The default (about 208 KiB) overflows when a burst of a
/// full congestion window arrives while the process is busy: on loopback a
/// fifth of the packets of a 1 MiB delta were dropped and sent again.
const SOCKET_BUFFER: usize = 4 << 20;

/// A UDP socket bound to `addr` with larger buffers.
fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    // Best effort: a smaller buffer still works.
    if let Err(e) = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER) {
        tracing::debug!("could not enlarge the UDP receive buffer: {e}");
    }
    if let Err(e) = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER) {
        tracing::debug!("could not enlarge the UDP send buffer: {e}");
    }
    Ok(socket)
}

/// A sender's endpoint for reaching `remote`: bound to an ephemeral port of
/// the same address family, with [`tls::client_config`] as its default. Must
/// be called within a tokio runtime.
pub fn client_endpoint(
    identity: &Identity,
    remote: SocketAddr,
) -> Result<quinn::Endpoint, TransportError> {
    let config = tls::client_config(identity)?;
    let addr = match remote {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket_err = |source| TransportError::ClientSocket {
        addr,
        remote,
        source,
    };
    let socket = udp_socket(addr).map_err(socket_err)?;
    let runtime = Arc::new(quinn::TokioRuntime);
    let mut endpoint =
        quinn::Endpoint::new(endpoint_config(), None, socket, runtime).map_err(socket_err)?;
    let mut config = config;
    config.transport_config(sender_transport_config(remote));
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Connects to the receiver at `remote`, bounded by [`HANDSHAKE_TIMEOUT`].
///
/// The returned connection has passed the TLS handshake only: check the
/// peer's id with [`tls::peer_id`] before trusting it.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    remote: SocketAddr,
) -> Result<quinn::Connection, TransportError> {
    let connecting =
        endpoint
            .connect(remote, SERVER_NAME)
            .map_err(|source| TransportError::Start {
                addr: remote,
                source,
            })?;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(source)) => Err(TransportError::Handshake {
            addr: remote,
            source,
        }),
        Err(_elapsed) => Err(TransportError::HandshakeTimeout { addr: remote }),
    }
}

/// UDP bytes sent and received by this connection so far, headers included.
pub fn bytes_on_wire(conn: &quinn::Connection) -> u64 {
    let stats = conn.stats();
    stats.udp_tx.bytes + stats.udp_rx.bytes
}

/// Resolves `host` (a name or an IP address, IPv6 optionally in brackets) and
/// `port` to the first address found.
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, TransportError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let mut addrs = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|source| TransportError::Resolve {
            host: host.to_string(),
            source,
        })?;
    addrs.next().ok_or_else(|| TransportError::NoAddress {
        host: host.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_mtu_to_loopback_is_read() {
        // Linux gives loopback a 64 KiB MTU; any working answer is at
        // least IPv6's minimum.
        let mtu = route_mtu(SocketAddr::from((Ipv4Addr::LOCALHOST, 9)));
        assert!(mtu.is_some_and(|m| m >= 1280), "{mtu:?}");
    }

    #[tokio::test]
    async fn resolve_handles_ips_and_bad_names() -> anyhow::Result<()> {
        assert_eq!(resolve("127.0.0.1", 7).await?, "127.0.0.1:7".parse()?);
        assert_eq!(resolve("[::1]", 7).await?, "[::1]:7".parse()?);
        let err = resolve("no-such-host.invalid", 7).await.err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("no-such-host.invalid"), "{msg}");
        Ok(())
    }

    #[tokio::test]
    async fn second_listener_on_a_port_says_why() -> anyhow::Result<()> {
        let identity = Identity::generate()?;
        let first = server_endpoint(&identity, "127.0.0.1:0".parse()?)?;
        let addr = first.local_addr()?;
        let err = server_endpoint(&identity, addr).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains(&addr.to_string()), "{msg}");
        assert!(msg.contains("another receiver"), "{msg}");
        Ok(())
    }
}
