//! The accept loop: HTTP/1.1 connections with a header read timeout (a connection that has not
//! sent a complete request head within `read_timeout` — idle keep-alive connections included —
//! is closed), a cap on open connections (beyond it a new connection gets a bare 503 with
//! `Retry-After` and is closed, so a flood of slow clients cannot starve `/healthz` for long),
//! and graceful shutdown (stop accepting, finish the requests in flight).
//!
//! Body reads are bounded separately by the [`crate::server`] middleware (declared size checked
//! before reading, whole body within `read_timeout`).

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connection settings.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    pub read_timeout: Duration,
    pub max_connections: usize,
}

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 92\r\n\r\n{\"error\": {\"code\": \"too_many_connections\", \"message\": \"too many open connections; retry\"}}\n";

/// Serves `app` on `listener` until `shutdown` resolves, then waits for open connections to
/// finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let mut stream = stream;
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), stream.write_all(REFUSAL)).await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
