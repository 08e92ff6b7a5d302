//! Admission of TCP connections, so that no client can stop, freeze or starve the
//! server by opening connections.
//!
//! A plain accept loop hands every connection straight to the gRPC transport, which
//! keeps it until the peer goes away. That leaves three holes, closed here:
//!
//! - **Half-open connections.** A client that connects and never sends a byte (no TLS
//!   ClientHello, no HTTP/2 preface) costs a file descriptor for ever; a few hundred
//!   of them exhaust the process's descriptors and lock everybody else out. Each new
//!   connection gets [`ConnectionLimits::handshake_timeout`] to send its first bytes
//!   and is closed otherwise. The wait runs in a task of its own, so one slow client
//!   never holds up the accept loop.
//! - **Floods.** At most [`ConnectionLimits::max_connections`] connections are open at
//!   once, and at most [`ConnectionLimits::max_per_address`] from one IP address, so a
//!   single client cannot take all the slots. Connections over a limit are closed at
//!   once; the warnings about them are rate-limited so that a flood cannot fill the
//!   log either. (An IPv6 client with a whole prefix can still use many addresses;
//!   the server-wide limit bounds what it can take.)
//! - **Accept errors.** When the process runs out of descriptors, `accept` fails at
//!   once, again and again; retrying immediately would spin a core. Failures are
//!   retried after an exponential back-off instead, and never end the stream.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// First pause after a failed `accept`; doubled after every further failure.
const MIN_BACKOFF: Duration = Duration::from_millis(5);
/// Longest pause between two `accept` attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// At most one warning per reason in this interval, so floods cannot fill the log.
const WARN_INTERVAL: Duration = Duration::from_secs(1);
/// Admitted connections waiting for the transport to pick them up. They keep their
/// slots while they wait, so the limits bound this queue anyway.
const QUEUE: usize = 64;

/// Limits on the connections the server accepts.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once, server-wide: bounds the descriptors and memory
    /// that connections can take.
    pub max_connections: usize,
    /// Most connections open at once from one client IP address, so that one client
    /// cannot take every slot.
    pub max_per_address: usize,
    /// How long a new connection may stay silent before its first bytes arrive (TLS
    /// ClientHello or the HTTP/2 preface); silent connections would otherwise hold a
    /// slot for ever.
    pub handshake_timeout: Duration,
}

/// Accepts connections from `listener` under `limits`; the returned stream feeds
/// `Server::serve_with_incoming_shutdown`.
///
/// The accept loop runs in a task of its own and ends, closing the listener, when the
/// stream is dropped. The stream never yields an error and never ends before that.
/// Must be called from within a Tokio runtime.
pub fn accept(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> impl futures::Stream<Item = Result<Connection, io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(accept_loop(listener, limits, tx));
    ReceiverStream::new(rx)
}

/// An accepted connection; releases its slot when dropped.
///
/// Reads and writes go straight to the TCP stream. The transport learns the peer's
/// address through [`Connected`], which is what `Request::remote_addr` reads.
pub struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    _slot: Slot,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        TcpConnectInfo { local_addr: self.stream.local_addr().ok(), remote_addr: Some(self.peer) }
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Open connections, in total and per client address. Addresses without connections
/// are removed, so the map is bounded by `max_connections`.
#[derive(Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// Which limit refused a connection.
#[derive(Clone, Copy)]
enum Refusal {
    Total,
    PerAddress,
}

/// One connection's share of [`Counts`], given back when dropped: whether the
/// connection is served, times out in its handshake or is never picked up.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Slot {
    /// Takes a slot for a connection from `ip`, or says which limit is reached.
    fn acquire(counts: &Arc<Mutex<Counts>>, ip: IpAddr, limits: &ConnectionLimits) -> Result<Slot, Refusal> {
        let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= limits.max_connections {
            return Err(Refusal::Total);
        }
        let from_ip = c.per_address.get(&ip).copied().unwrap_or(0);
        if from_ip >= limits.max_per_address {
            return Err(Refusal::PerAddress);
        }
        c.per_address.insert(ip, from_ip + 1);
        c.total += 1;
        Ok(Slot { counts: Arc::clone(counts), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Entry::Occupied(mut entry) = c.per_address.entry(self.ip) {
            if *entry.get() <= 1 {
                entry.remove();
            } else {
                *entry.get_mut() -= 1;
            }
        }
    }
}

/// Lets a warning through at most once per [`WARN_INTERVAL`] and counts the ones held
/// back.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(warnings held back since the last one)` when a warning may be logged now.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < WARN_INTERVAL) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Errors that concern one connection only (it went away before it was accepted):
/// the next `accept` can succeed at once, so there is nothing to back off from.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
    )
}

/// Accepts connections until the receiving end of `tx` is dropped, takes a slot for
/// each and hands it to [`admit`] in a task of its own.
async fn accept_loop(listener: TcpListener, limits: ConnectionLimits, tx: mpsc::Sender<Result<Connection, io::Error>>) {
    let counts = Arc::new(Mutex::new(Counts::default()));
    let mut backoff = MIN_BACKOFF;
    let (mut accept_warnings, mut total_warnings, mut address_warnings) =
        (Throttle::default(), Throttle::default(), Throttle::default());
    loop {
        let accepted = tokio::select! {
            _ = tx.closed() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = MIN_BACKOFF;
                accepted
            }
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "connection lost before it was accepted");
                continue;
            }
            Err(e) => {
                // Typically EMFILE/ENFILE (out of file descriptors): retrying at once
                // would fail again at once and spin.
                if let Some(suppressed) = accept_warnings.ready() {
                    let retry_ms = backoff.as_millis() as u64;
                    tracing::warn!(error = %e, retry_ms, suppressed, "cannot accept connections; retrying");
                }
                tokio::select! {
                    _ = tx.closed() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let ip = peer.ip().to_canonical();
        let slot = match Slot::acquire(&counts, ip, &limits) {
            Ok(slot) => slot,
            Err(refusal) => {
                let (warnings, key, limit) = match refusal {
                    Refusal::Total => (&mut total_warnings, "limits.max_connections", limits.max_connections),
                    Refusal::PerAddress => {
                        (&mut address_warnings, "limits.max_connections_per_address", limits.max_per_address)
                    }
                };
                if let Some(suppressed) = warnings.ready() {
                    tracing::warn!(peer = %ip, key, limit, suppressed, "connection refused: at its limit");
                }
                continue;
            }
        };
        // Small responses (a query's FlightInfo, a one-row result) must not wait
        // for Nagle's algorithm and the client's delayed ACK: without TCP_NODELAY
        // every request/response pair costs ~40 ms more on Linux.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        tokio::spawn(admit(Connection { stream, peer, _slot: slot }, limits.handshake_timeout, tx.clone()));
    }
}

/// Passes `connection` on once its first byte has arrived; drops it when it stays
/// silent for `timeout`, when the peer closes it first, or when the server shuts down.
async fn admit(connection: Connection, timeout: Duration, tx: mpsc::Sender<Result<Connection, io::Error>>) {
    let peer = connection.peer;
    // `peek` leaves the byte in the socket for the TLS or HTTP/2 layer to read.
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        _ = tx.closed() => return,
        peeked = tokio::time::timeout(timeout, connection.stream.peek(&mut first)) => peeked,
    };
    match peeked {
        Ok(Ok(0)) => tracing::debug!(%peer, "connection closed before sending anything"),
        Ok(Ok(_)) => {
            // Fails only when the server has shut down; the connection is dropped then.
            let _ = tx.send(Ok(connection)).await;
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection failed before sending anything"),
        Err(_) => {
            let timeout_ms = timeout.as_millis() as u64;
            tracing::debug!(%peer, timeout_ms, "connection closed: nothing received in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use futures::{Stream, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::timeout;

    use super::*;

    const GENEROUS: ConnectionLimits =
        ConnectionLimits { max_connections: 100, max_per_address: 100, handshake_timeout: Duration::from_secs(5) };

    async fn listen() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    /// The next connection the stream yields, within two seconds.
    async fn next(incoming: &mut (impl Stream<Item = Result<Connection, io::Error>> + Unpin)) -> Connection {
        timeout(Duration::from_secs(2), incoming.next())
            .await
            .expect("no connection admitted in time")
            .expect("the stream ended")
            .expect("the stream yielded an error")
    }

    /// Whether the server closes `client` (EOF or reset) within `within`.
    async fn closed_by_server(client: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 16];
        match timeout(within, client.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(n)) => panic!("the server sent {n} bytes"),
            Err(_) => false,
        }
    }

    fn remote(connection: &Connection) -> Option<SocketAddr> {
        connection.connect_info().remote_addr
    }

    #[tokio::test]
    async fn a_connection_that_speaks_is_admitted_with_its_address() {
        let (listener, addr) = listen().await;
        let mut incoming = pin!(accept(listener, GENEROUS));
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"P").await.unwrap();

        let mut connection = next(&mut incoming).await;
        let info = connection.connect_info();
        assert_eq!(info.remote_addr, Some(client.local_addr().unwrap()));
        assert_eq!(info.local_addr, Some(addr));
        // The byte that admitted the connection is still there for the transport.
        let mut byte = [0u8; 1];
        timeout(Duration::from_secs(2), connection.read_exact(&mut byte)).await.unwrap().unwrap();
        assert_eq!(&byte, b"P");
        connection.write_all(b"pong").await.unwrap();
        let mut reply = [0u8; 4];
        timeout(Duration::from_secs(2), client.read_exact(&mut reply)).await.unwrap().unwrap();
        assert_eq!(&reply, b"pong");
    }

    #[tokio::test]
    async fn connections_over_the_per_address_limit_are_closed() {
        let (listener, addr) = listen().await;
        let limits = ConnectionLimits { max_per_address: 2, ..GENEROUS };
        let mut incoming = pin!(accept(listener, limits));
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut third = TcpStream::connect(addr).await.unwrap();

        assert!(closed_by_server(&mut third, Duration::from_secs(1)).await, "the third connection stayed open");
        assert!(!closed_by_server(&mut first, Duration::from_millis(100)).await);
        assert!(!closed_by_server(&mut second, Duration::from_millis(100)).await);

        first.write_all(b"P").await.unwrap();
        second.write_all(b"P").await.unwrap();
        let a = next(&mut incoming).await;
        let b = next(&mut incoming).await;
        let mut admitted = [remote(&a), remote(&b)];
        admitted.sort();
        let mut clients = [Some(first.local_addr().unwrap()), Some(second.local_addr().unwrap())];
        clients.sort();
        assert_eq!(admitted, clients);

        // Closing one of them frees its slot.
        let (server_side_of_first, _server_side_of_second) =
            if remote(&a) == Some(first.local_addr().unwrap()) { (a, b) } else { (b, a) };
        drop(first);
        drop(server_side_of_first);
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        fourth.write_all(b"P").await.unwrap();
        let d = next(&mut incoming).await;
        assert_eq!(remote(&d), Some(fourth.local_addr().unwrap()));
        assert!(!closed_by_server(&mut second, Duration::from_millis(100)).await);
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
        let (listener, addr) = listen().await;
        let limits = ConnectionLimits { max_per_address: 1, handshake_timeout: Duration::from_millis(200), ..GENEROUS };
        let mut incoming = pin!(accept(listener, limits));
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();

        tokio::select! {
            closed = closed_by_server(&mut silent, Duration::from_secs(2)) => {
                assert!(closed, "the silent connection stayed open");
            }
            _ = incoming.next() => panic!("a silent connection was admitted"),
        }
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(150), "closed after {elapsed:?}, before the timeout");

        // The silent connection's slot is free again.
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"P").await.unwrap();
        let connection = next(&mut incoming).await;
        assert_eq!(remote(&connection), Some(client.local_addr().unwrap()));
    }
}
