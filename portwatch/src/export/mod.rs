//! `portwatch export`: the bind table's port pressure and the kernel's bind/connect
//! failure counters as Prometheus metrics.
//!
//! One module per concern: [`http`] serves requests, [`exposition`] names the metrics and
//! encodes them (Prometheus text or OpenMetrics), [`collector`] owns the eBPF session and
//! gathers the values at scrape time, [`walker`] takes the bind-table walks on a thread of
//! its own, [`netns_name`] names namespaces, [`caps`] drops the capabilities scraping does
//! not need once the programs are attached.

pub mod caps;
pub mod collector;
pub mod exposition;
pub mod http;
pub mod netns_name;
pub mod walker;

use std::{net::SocketAddr, sync::Arc};

/// Default listen address: loopback only. Port 10083: the exporter range 9100-9999 of the
/// Prometheus "Default port allocations" list is exhausted and new exporters take ports
/// from 10000 up; 10083 is not taken by any exporter found in that list or in use.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:10083";

/// Serves `listener` with scrapes from `handle` until SIGINT or SIGTERM, on a
/// single-threaded tokio runtime started here.
pub fn serve_until_signal(
    listener: std::net::TcpListener,
    handle: collector::ScrapeHandle,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let scrape: http::ScrapeFn = Arc::new(move || {
            let h = handle.clone();
            Box::pin(async move { h.scrape().await })
        });
        http::serve(listener, scrape, async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await;
        Ok(())
    })
}

/// The address `--listen` gave, checked.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>().map_err(|_| {
        format!("invalid --listen `{s}`: expected ADDR:PORT, e.g. 127.0.0.1:10083 or [::]:10083")
    })
}
