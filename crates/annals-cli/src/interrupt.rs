//! SIGINT (Ctrl-C) and SIGTERM for the long verbs.
//!
//! Exiting the process on a signal would skip the unfreeze of `--maintenance-mode
//! auto` (an embedded store keeps its freeze on disk), so the long verbs catch the
//! signals instead. The first signal asks the operation to stop at its next safe point:
//! an import's input ends there ([`Interrupt::reader`]: every line read before it is
//! stored, none after it), an export's next page is refused ([`Interrupt::writer`]:
//! the output holds whole pages only). The library then finishes normally, its
//! maintenance guard unfreezes the store, and the verb prints where to resume. A second
//! signal abandons the operation at once ([`Interrupt::abandoned`]): its future is
//! dropped inside the runtime, where the guard's unfreeze still runs.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use futures::task::AtomicWaker;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::Failure;

/// A signal the long verbs handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Signal {
    /// `SIGINT` or `SIGTERM`, as summaries name it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }

    /// The exit code of a process stopped by this signal: 128 + its number, the shell's
    /// convention (130, 143).
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }
}

struct Shared {
    /// Set by the first signal; the pour library polls it too.
    stop: Arc<AtomicBool>,
    /// The first signal received.
    first: Mutex<Option<Signal>>,
    /// How many signals were received.
    count: watch::Sender<u32>,
    /// The reader waiting for input, woken by the first signal so it can end.
    reader: AtomicWaker,
}

/// The signal handling of one long verb; installed by [`Interrupt::install`].
pub(crate) struct Interrupt {
    shared: Arc<Shared>,
}

impl Interrupt {
    /// Catches SIGINT (and SIGTERM on Unix) from now until the process exits.
    pub(crate) fn install() -> Result<Interrupt, Failure> {
        let shared = Arc::new(Shared {
            stop: Arc::new(AtomicBool::new(false)),
            first: Mutex::new(None),
            count: watch::Sender::new(0),
            reader: AtomicWaker::new(),
        });
        let mut signals = Signals::new().map_err(|e| Failure {
            code: 4,
            message: format!("cannot handle signals: {e}"),
        })?;
        let task = Arc::clone(&shared);
        tokio::spawn(async move {
            while let Some(signal) = signals.next().await {
                if let Ok(mut first) = task.first.lock() {
                    first.get_or_insert(signal);
                }
                task.stop.store(true, Ordering::SeqCst);
                task.reader.wake();
                task.count.send_modify(|n| *n += 1);
            }
        });
        Ok(Interrupt { shared })
    }

    /// The first signal received, if any.
    pub(crate) fn signal(&self) -> Option<Signal> {
        self.shared.first.lock().ok().and_then(|s| *s)
    }

    /// The flag the first signal sets (for libraries that poll one).
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shared.stop)
    }

    /// Resolves at the `n`th signal.
    async fn signals(&self, n: u32) {
        let mut count = self.shared.count.subscribe();
        // `wait_for` fails only when the sender is gone; it lives in `self`.
        let _ = count.wait_for(|&c| c >= n).await;
    }

    /// Resolves at the first signal.
    pub(crate) async fn requested(&self) {
        self.signals(1).await;
    }

    /// Resolves at the second signal: abandon the operation.
    pub(crate) async fn abandoned(&self) {
        self.signals(2).await;
    }

    /// `op`, unless a second signal abandons it first (`None`; `op` is dropped then).
    pub(crate) async fn unless_abandoned<T>(
        &self,
        op: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::select! {
            out = op => Some(out),
            () = self.abandoned() => None,
        }
    }

    /// `input`, ending (as at the end of the input) once a signal arrives; counts the
    /// bytes consumed into `bar`.
    pub(crate) fn reader<R>(&self, input: R, bar: indicatif::ProgressBar) -> StopReader<R> {
        StopReader {
            inner: input,
            shared: Arc::clone(&self.shared),
            cut: false,
            bar,
        }
    }

    /// `output`, refusing the next write once a signal arrives. Each write is taken
    /// whole (the previous one is passed on first), so the output ends with the last
    /// write taken before the signal, never part of one. Counts the lines taken into
    /// `bar`.
    pub(crate) fn writer<W>(&self, output: W, bar: indicatif::ProgressBar) -> StopWriter<W> {
        StopWriter {
            inner: output,
            bar,
            shared: Arc::clone(&self.shared),
            pending: Vec::new(),
            sent: 0,
            refused: false,
            lines: 0,
            last_line: Vec::new(),
            partial: Vec::new(),
        }
    }
}

#[cfg(unix)]
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) -> Option<Signal> {
        tokio::select! {
            s = self.interrupt.recv() => s.map(|()| Signal::Interrupt),
            s = self.terminate.recv() => s.map(|()| Signal::Terminate),
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> io::Result<Self> {
        Ok(Signals)
    }

    async fn next(&mut self) -> Option<Signal> {
        tokio::signal::ctrl_c()
            .await
            .ok()
            .map(|()| Signal::Interrupt)
    }
}

/// See [`Interrupt::reader`].
pub(crate) struct StopReader<R> {
    inner: R,
    shared: Arc<Shared>,
    cut: bool,
    bar: indicatif::ProgressBar,
}

impl<R> StopReader<R> {
    /// Whether the input was cut short by a signal.
    pub(crate) fn was_cut(&self) -> bool {
        self.cut
    }
}

impl<R: AsyncBufRead + Unpin> AsyncBufRead for StopReader<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        // Registered before the check, so a signal between the two still wakes us.
        this.shared.reader.register(cx.waker());
        if this.shared.stop.load(Ordering::SeqCst) {
            this.cut = true;
            return Poll::Ready(Ok(&[]));
        }
        Pin::new(&mut this.inner).poll_fill_buf(cx)
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.bar.inc(amt as u64);
        Pin::new(&mut this.inner).consume(amt);
    }
}

impl<R: AsyncBufRead + Unpin> AsyncRead for StopReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let available = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = available.len().min(buf.remaining());
        buf.put_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

/// See [`Interrupt::writer`].
pub(crate) struct StopWriter<W> {
    inner: W,
    bar: indicatif::ProgressBar,
    shared: Arc<Shared>,
    /// The last write taken, not yet all passed on.
    pending: Vec<u8>,
    /// How much of `pending` was passed on.
    sent: usize,
    refused: bool,
    lines: u64,
    last_line: Vec<u8>,
    /// What was taken after the last newline.
    partial: Vec<u8>,
}

impl<W> StopWriter<W> {
    /// Whether a write was refused because of a signal.
    pub(crate) fn refused(&self) -> bool {
        self.refused
    }

    /// Newlines taken so far.
    pub(crate) fn lines(&self) -> u64 {
        self.lines
    }

    /// The last complete line taken (without its newline).
    pub(crate) fn last_line(&self) -> &[u8] {
        &self.last_line
    }
}

impl<W: AsyncWrite + Unpin> StopWriter<W> {
    /// Passes `pending` on.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for StopWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if this.shared.stop.load(Ordering::SeqCst) {
            this.refused = true;
            return Poll::Ready(Err(io::Error::other("stopped by a signal")));
        }
        this.pending.extend_from_slice(buf);
        let newlines = buf.iter().filter(|&&b| b == b'\n').count() as u64;
        this.lines += newlines;
        this.bar.inc(newlines);
        match buf.iter().rposition(|&b| b == b'\n') {
            None => this.partial.extend_from_slice(buf),
            Some(end) => {
                match buf[..end].iter().rposition(|&b| b == b'\n') {
                    Some(start) => {
                        this.last_line.clear();
                        this.last_line.extend_from_slice(&buf[start + 1..end]);
                    }
                    None => {
                        this.last_line = std::mem::take(&mut this.partial);
                        this.last_line.extend_from_slice(&buf[..end]);
                    }
                }
                this.partial.clear();
                this.partial.extend_from_slice(&buf[end + 1..]);
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
