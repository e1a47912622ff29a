//! Serving a router on a public network: every connection and every request is bounded in time,
//! and the number of connections is bounded.
//!
//! `axum::serve` runs hyper without a timer: a client that sends its headers one line every few
//! seconds, or stops reading a response, holds its connection for ever. [`serve`] runs the same
//! router with hyper's own connection builder and these bounds ([`ServeOptions`]):
//!
//! - **headers**: a request's headers must arrive within `header_read_timeout`; the same timer
//!   closes a keep-alive connection idle that long (hyper starts it whenever it waits for a
//!   request head);
//! - **writes**: a response write that makes no progress for `write_timeout` (a client that
//!   stopped reading) fails, and hyper drops the connection and everything it held;
//! - **connections**: at most `max_connections` at once; a connection past that is closed at once;
//! - **shutdown**: when `shutdown` resolves, no connection is accepted and the ones open finish
//!   their requests.
//!
//! Request bodies are bounded by [`ServerBuilder::body_limit`](crate::ServerBuilder) and request
//! time by its request timeout, in the router.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Time and connection bounds of [`serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// Longest time to receive a request's headers, and to keep an idle connection open
    /// (default 10 s).
    pub header_read_timeout: Duration,
    /// Longest time a response write may make no progress before the connection is dropped
    /// (default 30 s).
    pub write_timeout: Duration,
    /// Most connections open at once (default 1,024).
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// Serves `router` on `listener` with `options` until `shutdown` resolves, then waits for the
/// requests in flight (at most `write_timeout` more).
///
/// # Errors
///
/// None in practice: a failed `accept` (too many open files, say) is logged and retried after a
/// short pause, and a failed connection only ends that connection.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(options.header_read_timeout))
        .keep_alive_timeout(options.header_read_timeout)
        .max_concurrent_streams(64);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!("accepting a connection failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(
                %peer,
                "closing a connection: {} are open already",
                options.max_connections
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(options.write_timeout));
        let io = TokioIo::new(Box::pin(stream));
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, "connection ended: {error}");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(options.write_timeout) => {
            tracing::warn!("shutting down with connections still open");
        }
    }
    Ok(())
}
