//! `keel trace`: an execution's steps as a table, by execution id or trace id.

use super::dollars;
use anyhow::{Context, bail};
use keel_core::describe::describe;
use keel_core::payload::Payload;
use keel_core::{Event, ExecId, TraceId};
use keel_spine::EventLog;
use std::path::Path;

fn summary(e: &Event) -> (String, String, String, String) {
    let (mut tokens, mut cost, mut ms) = (String::new(), String::new(), String::new());
    match &e.payload {
        Payload::ModelResponded(r) => {
            tokens = format!("{}/{}", r.tokens.input, r.tokens.output);
            cost = dollars(r.cost);
            ms = r.latency_ms.to_string();
        }
        Payload::ToolResult(r) => {
            cost = dollars(r.actual_cost);
            ms = r.latency_ms.to_string();
        }
        Payload::ExecFinished(f) => {
            tokens = format!("{}/{}", f.tokens.input, f.tokens.output);
            cost = dollars(f.cost);
        }
        _ => {}
    }
    (describe(&e.payload), tokens, cost, ms)
}

async fn find_by_trace(
    data: &Path,
    log: &dyn EventLog,
    trace: TraceId,
) -> anyhow::Result<Option<ExecId>> {
    // The projection (indexed by trace_id, brought up to date first), not a scan of the log.
    crate::observe::exec_by_trace(data, log, trace).await
}

/// `keel trace`: an execution's steps as a table.
pub async fn trace(data: &Path, id: &str) -> anyhow::Result<()> {
    let log = crate::observe::open_log(data)?;
    // 32 hex digits without hyphens is a trace id (it would also parse as a UUID).
    let exec = if let Ok(exec) = id
        .parse::<ExecId>()
        .map_err(drop)
        .and_then(|e| if id.contains('-') { Ok(e) } else { Err(()) })
    {
        exec
    } else if let Ok(trace) = id.parse::<TraceId>() {
        find_by_trace(data, &*log, trace)
            .await?
            .with_context(|| format!("no execution with trace id {trace}"))?
    } else {
        bail!("{id:?} is neither an execution id (UUID) nor a trace id (32 hex digits)");
    };
    let events = log.read(exec, 1).await?;
    if events.is_empty() {
        bail!("no execution {exec} in {}", log.shown());
    }
    println!(
        "execution {exec}  trace {}  tenant {}",
        events[0].trace_id, events[0].tenant
    );
    println!(
        "{:>4} {:>4}  {:<16} {:>10} {:>10} {:>6}  detail",
        "seq", "step", "event", "tokens", "cost", "ms"
    );
    for e in &events {
        let (text, tokens, cost, ms) = summary(e);
        let text: String = text.chars().take(110).collect();
        println!(
            "{:>4} {:>4}  {:<16} {:>10} {:>10} {:>6}  {text}",
            e.seq,
            e.step_n,
            e.event_type().as_str(),
            tokens,
            cost,
            ms
        );
    }
    Ok(())
}
