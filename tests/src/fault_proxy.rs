//! An HTTP/1.1 proxy in front of a test S3 server that can answer every
//! request with an error instead of passing it on: a 503 storm, a bucket
//! over its quota. Requests are forwarded byte for byte (their signatures,
//! made for the proxy's `Host`, stay valid: the server checks the header it
//! receives), one request and one response at a time per connection.
//!
//! ```no_run
//! # fn f(upstream: std::net::SocketAddr) -> anyhow::Result<()> {
//! use ferry_tests::fault_proxy::{Fault, FaultProxy};
//! let proxy = FaultProxy::start(upstream)?;
//! proxy.set(Some(Fault::slow_down()));
//! // ... clients of proxy.endpoint() get 503s ...
//! proxy.set(None);
//! # Ok(()) }
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;

/// What the proxy answers instead of passing a request on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `503 Slow Down`, `403 Forbidden`, ...
    pub status: String,
    /// S3's error code in the XML body (`SlowDown`, `QuotaExceeded`).
    pub code: String,
}

impl Fault {
    /// S3's throttling answer: retried by clients.
    pub fn slow_down() -> Fault {
        Fault {
            status: "503 Slow Down".into(),
            code: "SlowDown".into(),
        }
    }

    /// A bucket over its quota (as Ceph RGW and MinIO answer): not retried.
    pub fn quota_exceeded() -> Fault {
        Fault {
            status: "403 Forbidden".into(),
            code: "QuotaExceeded".into(),
        }
    }
}

/// The proxy; it stops accepting when dropped (connections it serves end
/// with their clients).
pub struct FaultProxy {
    addr: SocketAddr,
    fault: Arc<Mutex<Option<Fault>>>,
    faulted: Arc<AtomicU64>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and passes requests to
    /// `upstream` until told otherwise.
    pub fn start(upstream: SocketAddr) -> anyhow::Result<FaultProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let fault: Arc<Mutex<Option<Fault>>> = Arc::default();
        let faulted: Arc<AtomicU64> = Arc::default();
        let (f, n) = (fault.clone(), faulted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (f, n) = (f.clone(), n.clone());
                std::thread::spawn(move || {
                    let _ = serve(client, upstream, &f, &n);
                });
            }
        });
        Ok(FaultProxy {
            addr,
            fault,
            faulted,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer every request with `fault` from now on (`None`: pass them).
    pub fn set(&self, fault: Option<Fault>) {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = fault;
    }

    /// Requests answered with a fault so far.
    pub fn faulted(&self) -> u64 {
        self.faulted.load(Ordering::Relaxed)
    }
}

/// One message's head (up to and with the blank line) and its headers.
struct Head {
    bytes: Vec<u8>,
    first_line: String,
    content_length: Option<u64>,
    chunked: bool,
}

fn read_head(r: &mut impl BufRead) -> anyhow::Result<Option<Head>> {
    let mut bytes = Vec::new();
    let mut first_line = String::new();
    let (mut content_length, mut chunked) = (None, false);
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return match bytes.is_empty() {
                true => Ok(None),
                false => anyhow::bail!("the connection closed inside a message head"),
            };
        }
        bytes.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if first_line.is_empty() {
            first_line = text;
            continue;
        }
        if text.is_empty() {
            break;
        }
        if let Some((name, value)) = text.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "content-length" {
                content_length = Some(value.parse().context("content-length")?);
            } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    Ok(Some(Head {
        bytes,
        first_line,
        content_length,
        chunked,
    }))
}

/// Copies a message's body from `r` to `w` as its head describes it.
fn relay_body(
    head: &Head,
    bodyless: bool,
    r: &mut impl BufRead,
    w: &mut impl Write,
) -> anyhow::Result<()> {
    if bodyless {
        return Ok(());
    }
    if head.chunked {
        loop {
            let mut size_line = Vec::new();
            r.read_until(b'\n', &mut size_line)?;
            w.write_all(&size_line)?;
            let size_text = String::from_utf8_lossy(&size_line);
            let size = u64::from_str_radix(size_text.trim().split(';').next().unwrap_or("0"), 16)
                .context("chunk size")?;
            // The chunk and its CRLF (or, after the last, the trailer's end).
            std::io::copy(&mut r.by_ref().take(size), w)?;
            let mut end = Vec::new();
            r.read_until(b'\n', &mut end)?;
            w.write_all(&end)?;
            if size == 0 {
                return Ok(());
            }
        }
    }
    let len = head.content_length.unwrap_or(0);
    let copied = std::io::copy(&mut r.by_ref().take(len), w)?;
    anyhow::ensure!(
        copied == len,
        "the body ended after {copied} of {len} bytes"
    );
    Ok(())
}

fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    fault: &Mutex<Option<Fault>>,
    faulted: &AtomicU64,
) -> anyhow::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let mut server: Option<(BufReader<TcpStream>, TcpStream)> = None;
    while let Some(request) = read_head(&mut from_client)? {
        let mut body = Vec::new();
        relay_body(&request, false, &mut from_client, &mut body)?;
        let now = fault.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(fault) = now {
            faulted.fetch_add(1, Ordering::Relaxed);
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{}</Code><Message>injected by the test's proxy</Message></Error>",
                fault.code
            );
            write!(
                to_client,
                "HTTP/1.1 {}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{xml}",
                fault.status,
                xml.len()
            )?;
            continue;
        }
        if server.is_none() {
            let s = TcpStream::connect(upstream)?;
            server = Some((BufReader::new(s.try_clone()?), s));
        }
        let Some((from_server, to_server)) = server.as_mut() else {
            unreachable!("connected above")
        };
        to_server.write_all(&request.bytes)?;
        to_server.write_all(&body)?;
        let Some(response) = read_head(from_server)? else {
            anyhow::bail!("the server closed the connection without answering");
        };
        to_client.write_all(&response.bytes)?;
        let status = response.first_line.split(' ').nth(1).unwrap_or("");
        let bodyless = request.first_line.starts_with("HEAD ")
            || status.starts_with('1')
            || status == "204"
            || status == "304";
        relay_body(&response, bodyless, from_server, &mut to_client)?;
    }
    Ok(())
}
