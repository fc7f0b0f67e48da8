//! A server on a thread of its own: for tests of applications that talk to Annals over
//! HTTP, and for tools that embed a server next to other work.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::{ServeError, Server, ServerConfig};

/// A [`Server`] running on its own thread and tokio runtime, started by
/// [`Server::spawn`]. Dropping it shuts the server down gracefully and waits for it.
///
/// ```
/// use annals_server::{Server, ServerConfig};
/// let dir = tempfile::tempdir()?;
/// let config = ServerConfig::new(dir.path()).listen("127.0.0.1:0".parse()?);
/// let server = Server::spawn(config)?;
/// assert!(server.url().starts_with("http://127.0.0.1:"));
/// server.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RunningServer {
    addr: SocketAddr,
    url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Server {
    /// Binds and runs a server on a new thread with its own multi-threaded runtime;
    /// returns once it listens. Binding errors are returned here; the server
    /// then runs until [`RunningServer::shutdown`] or until it is dropped.
    ///
    /// ```
    /// use annals_server::{ServeError, Server, ServerConfig};
    /// # let dir = tempfile::tempdir()?;
    /// let server = Server::spawn(ServerConfig::new(dir.path()).listen("127.0.0.1:0".parse()?))?;
    /// assert_ne!(server.local_addr().port(), 0);
    ///
    /// // What `bind` refuses comes back here.
    /// let open = Server::spawn(ServerConfig::new(dir.path()).listen("0.0.0.0:0".parse()?));
    /// assert!(matches!(open, Err(ServeError::NotLoopback(_))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn(config: ServerConfig) -> Result<RunningServer, ServeError> {
        let listen = config.listen;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("annals-server")
            .enable_all()
            .build()
            .map_err(|source| ServeError::Io {
                addr: listen,
                source,
            })?;
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("annals-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let server = match Server::bind(config).await {
                        Ok(server) => server,
                        Err(e) => {
                            let _ = bound_tx.send(None);
                            return Err(e);
                        }
                    };
                    let _ = bound_tx.send(Some(server.local_addr()));
                    server
                        .run_until(async {
                            // A dropped sender stops the server too.
                            let _ = stopped.await;
                        })
                        .await
                })
            })
            .map_err(|source| ServeError::Io {
                addr: listen,
                source,
            })?;
        match bound_rx.recv() {
            Ok(Some(addr)) => Ok(RunningServer {
                addr,
                url: format!("http://{addr}"),
                stop: Some(stop),
                thread: Some(thread),
            }),
            // Binding failed: the thread returns the error.
            _ => Err(match thread.join() {
                Ok(Err(e)) => e,
                _ => ServeError::Io {
                    addr: listen,
                    source: std::io::Error::other("the server thread ended before listening"),
                },
            }),
        }
    }
}

impl RunningServer {
    /// The address it listens on.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let server = annals_server::Server::spawn(
    /// #     annals_server::ServerConfig::new(dir.path()).listen("127.0.0.1:0".parse()?))?;
    /// assert!(server.local_addr().ip().is_loopback());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://<address>`, as `annals-client` and the CLI take it.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let server = annals_server::Server::spawn(
    /// #     annals_server::ServerConfig::new(dir.path()).listen("127.0.0.1:0".parse()?))?;
    /// assert_eq!(server.url(), format!("http://{}", server.local_addr()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Shuts the server down gracefully (see [`Server::run_until`]) and waits for it;
    /// returns how serving ended.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let server = annals_server::Server::spawn(
    /// #     annals_server::ServerConfig::new(dir.path()).listen("127.0.0.1:0".parse()?))?;
    /// server.shutdown()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(mut self) -> Result<(), ServeError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(served)) => served,
            Some(Err(_)) => Err(ServeError::Io {
                addr: self.addr,
                source: std::io::Error::other("the server thread panicked"),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}
