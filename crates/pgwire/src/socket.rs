//! One client connection's message loop.
//!
//! pgwire's own loop (`process_socket`) is replaced by this one for what only the owner of
//! the socket can do:
//!
//! - **Message size.** Postgres frames allow 1 GiB messages, which pgwire would buffer whole.
//!   The socket is read through [`Limited`], which follows the framing as bytes arrive and
//!   refuses a message whose declared length passes [`MAX_MESSAGE_BYTES`] before any of its
//!   body is buffered: the client gets `FATAL 54000` and the connection closes (Postgres also
//!   ends the connection on a message it will not read). A message over
//!   [`LARGE_MESSAGE_BYTES`] is reserved from the node's SQL memory budget while it is
//!   buffered (`FATAL 53200` when the budget has no room), so many connections sending large
//!   messages at once cannot exhaust the node's memory either.
//! - **Idle in transaction.** While the session has a transaction open, waiting for the next
//!   message is bounded by its `idle_in_transaction_session_timeout`; past it the transaction
//!   rolls back and the connection closes with `FATAL 25P03`, as in Postgres.
//! - **Prepared statements.** `DEALLOCATE ALL` and `DISCARD ALL` empty the connection's
//!   statement and portal store, which pgwire keeps inside the socket's codec.
//!
//! Everything else (startup, the simple and extended protocols, COPY, cancel) is pgwire's
//! `process_message`, called once per message exactly as its loop does.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pgwire::api::store::MemPortalStore;
use pgwire::api::{ClientInfo, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{
    negotiate_tls, process_error, process_message, PgWireMessageServerCodec,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

use bini_sql::Reservation;

use crate::{Connection, Prepared};

/// The largest message a client may send (a statement's text is refused past
/// `bini_sql::MAX_STATEMENT_BYTES`, with room here for a Bind's parameters).
pub const MAX_MESSAGE_BYTES: usize = 32 << 20;

/// Messages larger than this are reserved from the SQL memory budget while buffered.
pub const LARGE_MESSAGE_BYTES: usize = 1 << 20;

/// How long a new connection has to complete its startup.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves one client connection until it closes.
pub(crate) async fn serve(
    stream: TcpStream,
    handlers: Arc<Connection>,
    memory: Reservation,
) -> io::Result<()> {
    let negotiated = tokio::time::timeout(STARTUP_TIMEOUT, negotiate_tls(stream, None)).await;
    let Ok(Some(socket)) = negotiated.unwrap_or(Ok(None)) else {
        return Ok(());
    };
    // Bytes pgwire has read already (the start of the startup message) are buffered in the
    // codec; the framing check starts from them.
    let parts = socket.into_parts();
    let limited = Limited::new(parts.io, &parts.read_buf, memory);
    let mut next = FramedParts::new(limited, parts.codec);
    next.read_buf = parts.read_buf;
    next.write_buf = parts.write_buf;
    let mut socket = Framed::from_parts(next);

    let (startup, conn, cancel) = (
        handlers.startup.clone(),
        handlers.conn.clone(),
        handlers.cancel.clone(),
    );
    let startup_deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let idle_limit = match socket.transaction_status() {
            TransactionStatus::Transaction | TransactionStatus::Error if !starting => {
                handlers.conn.session.idle_in_transaction_timeout().await
            }
            _ => None,
        };
        let msg = if starting {
            match tokio::time::timeout_at(startup_deadline, socket.next()).await {
                Ok(m) => m,
                Err(_) => return Ok(()),
            }
        } else if let Some(limit) = idle_limit {
            match tokio::time::timeout(limit, socket.next()).await {
                Ok(m) => m,
                Err(_) => {
                    handlers.conn.session.abandon().await;
                    return fatal(
                        &mut socket,
                        "25P03",
                        "terminating connection due to idle-in-transaction timeout",
                    )
                    .await;
                }
            }
        } else {
            socket.next().await
        };
        // The message is decoded: what was reserved for its buffering is free again.
        socket.get_mut().memory.clear();
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(PgWireError::IoError(e))) => {
                if let Some(big) = e.get_ref().and_then(|x| x.downcast_ref::<TooLarge>()) {
                    let text = big.to_string();
                    return fatal(&mut socket, "54000", &text).await;
                }
                if let Some(oom) = e.get_ref().and_then(|x| x.downcast_ref::<NoMemory>()) {
                    let text = oom.0.to_string();
                    return fatal(&mut socket, "53200", &text).await;
                }
                return Ok(());
            }
            Some(Err(e)) => {
                // A message that does not decode: pgwire's answer, then the connection ends.
                let _ = process_error(&mut socket, e, false).await;
                return Ok(());
            }
            None => return Ok(()),
        };
        // Terminate ends the session; a cancel request's connection closes once handled.
        if matches!(msg, PgWireFrontendMessage::Terminate(_)) {
            return Ok(());
        }
        let is_cancel = matches!(msg, PgWireFrontendMessage::CancelRequest(_));
        let in_extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => msg.is_extended_query(),
        };
        let result = process_message(
            msg,
            &mut socket,
            startup.clone(),
            conn.clone(),
            conn.clone(),
            conn.clone(),
            cancel.clone(),
        )
        .await;
        if handlers.conn.session.take_statement_reset() {
            socket.codec_mut().client_info.portal_store = MemPortalStore::<Prepared>::new();
        }
        if let Err(e) = result {
            let is_fatal = e.is_fatal();
            process_error(&mut socket, e, in_extended).await?;
            if is_fatal {
                return Ok(());
            }
        }
        if is_cancel {
            return Ok(());
        }
    }
}

/// Sends a FATAL error and closes the connection.
async fn fatal<S>(
    socket: &mut Framed<S, PgWireMessageServerCodec<Prepared>>,
    code: &str,
    message: &str,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let info = ErrorInfo::new("FATAL".into(), code.into(), message.into());
    socket
        .send(PgWireBackendMessage::ErrorResponse(info.into()))
        .await?;
    socket.close().await
}

/// A message longer than [`MAX_MESSAGE_BYTES`], refused from its header.
#[derive(Debug)]
struct TooLarge {
    len: usize,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "message of {} bytes is larger than the {}-byte limit",
            self.len, MAX_MESSAGE_BYTES
        )
    }
}

impl std::error::Error for TooLarge {}

/// A large message the SQL memory budget had no room for.
#[derive(Debug)]
struct NoMemory(bini_sql::Error);

impl std::fmt::Display for NoMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for NoMemory {}

/// Where the frontend message stream stands: Postgres frames are a type byte (absent on the
/// first, startup, message) and a 4-byte big-endian length counting itself, then the body.
#[derive(Debug, Default)]
struct Framing {
    /// The startup message (untyped) has been seen.
    started: bool,
    header: [u8; 5],
    /// Header bytes seen of the current message.
    have: usize,
    /// Body bytes still to come of the current message.
    body_left: usize,
}

impl Framing {
    /// Follows `bytes` through the framing; fails on a header announcing a message too large.
    /// Returns the lengths of the large messages that begin in `bytes`.
    fn advance(&mut self, mut bytes: &[u8]) -> Result<Vec<usize>, TooLarge> {
        let mut large = Vec::new();
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let header_len = if self.started { 5 } else { 4 };
            let n = (header_len - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < header_len {
                continue;
            }
            let at = header_len - 4;
            let len_bytes: [u8; 4] = self.header[at..header_len].try_into().expect("four bytes");
            let len = u32::from_be_bytes(len_bytes) as usize;
            if len > MAX_MESSAGE_BYTES {
                return Err(TooLarge { len });
            }
            if len > LARGE_MESSAGE_BYTES {
                large.push(len);
            }
            // A length below 4 is pgwire's to refuse; nothing of it is buffered here.
            self.body_left = len.saturating_sub(4);
            self.have = 0;
            if !self.started {
                // SSL and GSS requests (also untyped) are answered before this loop runs, so
                // the first message here is the startup or a cancel request.
                self.started = true;
            }
        }
        Ok(large)
    }
}

/// A socket read through the framing check.
pub(crate) struct Limited<IO> {
    io: IO,
    framing: Framing,
    /// Set once a message was refused: every later read fails the same way.
    refused: Option<io::ErrorKind>,
    /// What large messages being buffered hold of the SQL memory budget.
    memory: Reservation,
}

impl<IO> Limited<IO> {
    /// Wraps `io`, whose stream began with `already` (bytes read before the wrap).
    fn new(io: IO, already: &[u8], memory: Reservation) -> Self {
        let mut l = Limited {
            io,
            framing: Framing::default(),
            refused: None,
            memory,
        };
        // The startup message is small (pgwire refuses one over 10,000 bytes).
        if let Err(e) = l.follow(already) {
            l.refused = Some(e.kind());
        }
        l
    }

    /// Follows bytes read through the framing, reserving large messages.
    fn follow(&mut self, bytes: &[u8]) -> io::Result<()> {
        let large = self
            .framing
            .advance(bytes)
            .map_err(|t| io::Error::new(io::ErrorKind::InvalidData, t))?;
        for len in large {
            self.memory
                .grow(len as u64)
                .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, NoMemory(e)))?;
        }
        Ok(())
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Limited<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(kind) = self.refused {
            return Poll::Ready(Err(io::Error::new(kind, "message refused")));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = buf.filled();
                if let Err(e) = this.follow(&filled[before..]) {
                    this.refused = Some(e.kind());
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Limited<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn framing_follows_messages_split_anywhere() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&12u32.to_be_bytes());
        stream.extend_from_slice(&[0, 3, 0, 0, b'u', 0, 0, 0]);
        stream.extend(typed(b'Q', b"select 1\0"));
        stream.extend(typed(b'S', b""));
        // Fed one byte at a time, then all at once: both end between messages.
        let mut f = Framing::default();
        for b in &stream {
            f.advance(std::slice::from_ref(b)).expect("small messages");
        }
        assert_eq!((f.have, f.body_left), (0, 0));
        let mut f = Framing::default();
        f.advance(&stream).expect("small messages");
        assert_eq!((f.have, f.body_left), (0, 0));
    }

    #[test]
    fn a_huge_length_is_refused_from_the_header() {
        let mut f = Framing::default();
        f.advance(&8u32.to_be_bytes()).expect("startup length");
        f.advance(&[0, 3, 0, 0]).expect("startup body");
        let mut header = vec![b'Q'];
        header.extend_from_slice(&(1u32 << 30).to_be_bytes());
        let err = f.advance(&header).expect_err("1 GiB is refused");
        assert_eq!(err.len, 1 << 30);
    }
}
