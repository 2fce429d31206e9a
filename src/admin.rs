//! The admin HTTP listener: `/healthz` (the process answers), `/readyz` (the store, clamd when a
//! pipeline scans for viruses, and the listeners are up — a JSON body names each check) and
//! `/metrics` (Prometheus text, from the `metrics` crate's recorder).
//!
//! Three GET endpoints for a monitoring system on loopback: a bounded request reader written
//! here, rather than an HTTP framework whose build costs more than the whole daemon's.

use crate::daemon::Context;
use crate::policy::StageName;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub async fn run(ctx: Arc<Context>, listener: TcpListener, metrics: PrometheusHandle) {
    let mut shutdown = ctx.shutdown.subscribe();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = shutdown.recv() => return,
        };
        let (ctx, metrics) = (ctx.clone(), metrics.clone());
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(10), serve(ctx, stream, metrics)).await;
        });
    }
}

async fn serve(
    ctx: Arc<Context>,
    mut stream: TcpStream,
    metrics: PrometheusHandle,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, kind, body) = match (method, path) {
        ("GET", "/healthz") => (200, "text/plain", "ok\n".to_owned()),
        ("GET", "/readyz") => {
            let (ready, body) = readiness(&ctx).await;
            (if ready { 200 } else { 503 }, "application/json", body)
        }
        ("GET", "/metrics") => {
            queue_gauges(&ctx).await;
            (200, "text/plain; version=0.0.4", metrics.render())
        }
        ("GET", _) => (404, "text/plain", "not found\n".to_owned()),
        _ => (405, "text/plain", "only GET\n".to_owned()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Every check with its result; ready when all pass.
async fn readiness(ctx: &Context) -> (bool, String) {
    let limit = Duration::from_secs(3);
    let store = match tokio::time::timeout(limit, ctx.store.ping()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("failing: {e}"),
        Err(_) => "failing: no answer".to_owned(),
    };
    let p = &ctx.config.policy;
    let scans = p
        .inbound
        .stages
        .iter()
        .chain(&p.outbound.stages)
        .any(|s| *s == StageName::Virus);
    let clamd = if scans {
        match crate::policy::virus::Scanner::new(&p.virus).ping().await {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("failing: {e}"),
        }
    } else {
        "not used".to_owned()
    };
    let listeners = if ctx.shutdown.is_triggered() {
        "stopping"
    } else {
        "ok"
    };
    let ready = store == "ok" && (clamd == "ok" || clamd == "not used") && listeners == "ok";
    let body = json!({ "ready": ready, "checks": { "store": store, "clamd": clamd, "listeners": listeners } });
    (ready, format!("{body}\n"))
}

/// Queue depth by status, read from the store at each scrape (shared by every node).
async fn queue_gauges(ctx: &Context) {
    if let Ok(counts) = ctx.store.depth().await {
        for (status, n) in counts {
            metrics::gauge!("passerelle_queue_recipients", "status" => status).set(n as f64);
        }
    }
    let age = match ctx.store.oldest_pending().await {
        Ok(Some(at)) => (crate::store::now_ms() - at).max(0) as f64 / 1000.0,
        _ => 0.0,
    };
    metrics::gauge!("passerelle_queue_oldest_seconds").set(age);
}
