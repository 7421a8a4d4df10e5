//! stdin and stdout as the event loop's own file descriptors. tokio's `Stdin`/`Stdout` hand every
//! read and write to a blocking thread (a thread wake-up each way, per message); when they are
//! pipes — as MCP clients start their servers — they are switched to non-blocking and read and
//! written by the runtime's poller itself (`tokio::net::unix::pipe`), with no hand-off. Anything
//! else (a terminal, a file, a socket) keeps tokio's blocking-thread streams: non-blocking mode on a
//! terminal would be seen by the shell that owns it. The original file status flags are restored
//! when the stream is dropped.

use std::{
    io,
    os::fd::{AsFd, OwnedFd},
    pin::Pin,
    task::{Context, Poll},
};

use rustix::fs::{FileType, OFlags};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::unix::pipe,
};

/// A pipe end in non-blocking mode, put back as it was on drop.
struct Restored<T: AsFd> {
    inner: T,
    flags: OFlags,
}

impl<T: AsFd> Drop for Restored<T> {
    fn drop(&mut self) {
        let _ = rustix::fs::fcntl_setfl(&self.inner, self.flags);
    }
}

/// `fd` as a non-blocking pipe end made by `open` (`pipe::Receiver`/`Sender::from_owned_fd`), when
/// it is a pipe and can be polled; `None` leaves it as it was, for tokio's blocking-thread stream.
fn polled<P: AsFd>(fd: impl AsFd, open: impl FnOnce(OwnedFd) -> io::Result<P>) -> Option<Restored<P>> {
    let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd).ok()?.st_mode);
    if kind != FileType::Fifo {
        return None;
    }
    let flags = rustix::fs::fcntl_getfl(&fd).ok()?;
    match open(fd.as_fd().try_clone_to_owned().ok()?) {
        Ok(inner) => Some(Restored { inner, flags }),
        Err(e) => {
            // Blocking again for the blocking-thread stream, in case the mode was already switched.
            let _ = rustix::fs::fcntl_setfl(&fd, flags);
            tracing::debug!("stdio cannot be polled ({e}); using a blocking thread");
            None
        }
    }
}

impl AsyncRead for Restored<pipe::Receiver> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Restored<pipe::Sender> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// This process's stdin, polled when it is a pipe.
pub(super) fn stdin() -> Box<dyn AsyncRead + Unpin + Send> {
    match polled(io::stdin(), pipe::Receiver::from_owned_fd) {
        Some(pipe) => Box::new(pipe),
        None => Box::new(tokio::io::stdin()),
    }
}

/// This process's stdout, polled when it is a pipe.
pub(super) fn stdout() -> Box<dyn AsyncWrite + Unpin + Send> {
    match polled(io::stdout(), pipe::Sender::from_owned_fd) {
        Some(pipe) => Box::new(pipe),
        None => Box::new(tokio::io::stdout()),
    }
}
