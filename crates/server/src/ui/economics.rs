//! Agent economics over HTTP: `GET /v1/economics?days=N` and the page `/ui/economics` — the
//! seed's per-strategy table (cost per success per strategy version, cheapest first), cost by
//! tenant, tool and model, and a chart of cost per success per strategy version per day, drawn
//! here as inline SVG (no script, no external asset; the page's CSP allows neither).
//!
//! Both are for operators and cover the caller's own tenant only, whatever its roles (decision
//! 050: no credential the server accepts reads across tenants); the cross-tenant view is
//! `keel economics` on the machine that holds the store.

use super::{principal, render, who};
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::observe::with_projections;
use crate::params::Params;
use crate::{Caller, State};
use askama::Template;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use keel_observe::economics::{self, DayPoint, Economics};
use keel_spine::clock::{Clock, SystemClock};
use serde::Deserialize;
use std::fmt::Write;

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/v1/economics", get(economics_api))
        .route("/ui/economics", get(economics_page))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EconomicsParams {
    #[serde(default)]
    days: Option<u32>,
}

/// The economics of the last `days` days of `p`'s tenant.
async fn report(state: &State, p: &Principal, days: u32) -> Result<Economics, ApiError> {
    if days == 0 || days > economics::MAX_DAYS {
        return Err(ApiError::bad(
            "days",
            format!("{days} is not between 1 and {}", economics::MAX_DAYS),
        ));
    }
    let since = economics::since(SystemClock.now(), days)
        .map_err(|e| ApiError::bad("days", e.to_string()))?;
    let tenant = p.tenant.clone();
    with_projections(state, move |store| {
        Box::pin(async move { economics::compute(store, &since, Some(&tenant)).await })
    })
    .await
}

/// `GET /v1/economics?days=N` (operators; default 14 days).
async fn economics_api(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Params(q): Params<EconomicsParams>,
) -> Result<Json<Economics>, ApiError> {
    crate::api::need(&caller, &[Role::Operator])?;
    Ok(Json(report(&state, &caller.0, q.days.unwrap_or(14)).await?))
}

struct StrategyRow {
    strategy: String,
    executions: u64,
    success_rate: String,
    p50_cost: String,
    p95_cost: String,
    p95_steps: String,
    gates: String,
    total: String,
    cost_per_success: String,
}

#[derive(Template)]
#[template(path = "economics.html")]
struct EconomicsPage {
    title: &'static str,
    refresh: bool,
    who: String,
    flash: String,
    since: String,
    tenant: String,
    verdict: String,
    chart: String,
    strategies: Vec<StrategyRow>,
    tenants: Vec<(String, u64, u64, String, String, u64)>,
    tools: Vec<(String, u64, u64, String)>,
    models: Vec<(String, u64, String)>,
}

fn opt(v: Option<f64>, d: usize) -> String {
    v.map_or("—".into(), |x| format!("{x:.d$}"))
}

fn usd(v: f64) -> String {
    format!("${v:.6}")
}

/// In words: which strategy version is cheapest per success, and by how much.
fn verdict(e: &Economics) -> String {
    let priced: Vec<_> = e
        .strategies
        .iter()
        .filter_map(|s| Some((s, s.cost_per_success?)))
        .collect();
    match priced.as_slice() {
        [] => "No strategy version has a success in this window yet: nothing to compare.".into(),
        [(s, c)] => format!(
            "Only {} has successes: {} per success.",
            s.strategy_version,
            usd(*c)
        ),
        [(s, c), .., (w, wc)] => format!(
            "Cheapest per success: {} at {} — {:.1}× cheaper than {} ({}).",
            s.strategy_version,
            usd(*c),
            if *c > 0.0 { wc / c } else { f64::INFINITY },
            w.strategy_version,
            usd(*wc)
        ),
    }
}

async fn economics_page(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
    Params(q): Params<EconomicsParams>,
) -> Response {
    let p = match principal(&state, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if !p.may(&[Role::Operator]) {
        return ApiError::Forbidden("the economics page needs the operator role".into())
            .into_response();
    }
    let e = match report(&state, &p, q.days.unwrap_or(14)).await {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    render(&EconomicsPage {
        title: "Economics",
        refresh: false,
        who: who(&p),
        flash: String::new(),
        since: e.since.clone(),
        tenant: p.tenant.clone(),
        verdict: verdict(&e),
        chart: chart(&e.series),
        strategies: e
            .strategies
            .iter()
            .map(|s| StrategyRow {
                strategy: s.strategy_version.clone(),
                executions: s.executions,
                success_rate: opt(s.success_rate, 3),
                p50_cost: opt(s.p50_cost, 5),
                p95_cost: opt(s.p95_cost, 5),
                p95_steps: opt(s.p95_steps, 1),
                gates: opt(s.gates_per_exec, 2),
                total: usd(s.total_cost),
                cost_per_success: s.cost_per_success.map_or("—".into(), usd),
            })
            .collect(),
        tenants: e
            .tenants
            .iter()
            .map(|t| {
                (
                    t.tenant.clone(),
                    t.executions,
                    t.successes,
                    usd(t.total_cost),
                    t.cost_per_success.map_or("—".into(), usd),
                    t.cost_unknown,
                )
            })
            .collect(),
        tools: e
            .tools
            .iter()
            .map(|l| (l.name.clone(), l.calls, l.failures, usd(l.cost)))
            .collect(),
        models: e
            .models
            .iter()
            .map(|l| (l.name.clone(), l.calls, usd(l.cost)))
            .collect(),
    })
}

/// Text for SVG or HTML: the five characters that could end an attribute or open a tag.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Okabe–Ito colours (told apart with colour-blindness too); past seven, dashes tell them apart.
const COLOURS: [&str; 7] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
];
const DASHES: [&str; 3] = ["", "6 4", "2 3"];

/// A round step for about `n` ticks up to `max`: 1, 2 or 5 × 10^k.
fn step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// A dollar amount with enough digits for `step` to tell ticks apart.
fn tick_label(v: f64, step: f64) -> String {
    let digits = (-step.log10().floor()).clamp(0.0, 8.0) as usize;
    format!("${v:.digits$}")
}

/// The chart: one line per strategy version (in the order of `series`' first appearance), a
/// point per day with a success, gaps on days without one; axes with dollar and date ticks and
/// a legend. Every series is a `<g class="series" data-strategy=…>`; every point has a
/// `<title>` (hover) with its figures.
pub(crate) fn chart(series: &[DayPoint]) -> String {
    const W: f64 = 760.0;
    const LEFT: f64 = 78.0;
    const RIGHT: f64 = 24.0;
    const TOP: f64 = 16.0;
    const PLOT_H: f64 = 240.0;
    const LEGEND_ROW: f64 = 20.0;
    let days: std::collections::BTreeSet<&str> = series.iter().map(|p| p.day.as_str()).collect();
    let mut names: Vec<&str> = Vec::new();
    for p in series {
        if !names.contains(&p.strategy_version.as_str()) {
            names.push(&p.strategy_version);
        }
    }
    let parse = |d: &str| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
    let (first, last) = match (
        days.first().copied().and_then(parse),
        days.last().copied().and_then(parse),
    ) {
        (Some(a), Some(b)) => (a, b),
        _ => {
            return "<p id=\"no-chart\">No executions in this window: nothing to chart.</p>".into();
        }
    };
    let span = (last - first).num_days().max(0) as f64;
    let plot_w = W - LEFT - RIGHT;
    let x_at = |i: f64| {
        if span == 0.0 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i / span
        }
    };
    let x_of = |d: &str| parse(d).map(|d| x_at((d - first).num_days() as f64));
    let max = series
        .iter()
        .filter_map(|p| p.cost_per_success)
        .fold(0.0f64, f64::max);
    let ystep = step(if max > 0.0 { max } else { 1.0 }, 4.0);
    let ymax = (max / ystep).ceil().max(1.0) * ystep;
    let y_of = |v: f64| TOP + PLOT_H * (1.0 - v / ymax);
    let legend_top = TOP + PLOT_H + 44.0;
    let h = legend_top + LEGEND_ROW * names.len() as f64 + 4.0;

    let mut s = String::new();
    let _ = write!(
        s,
        "<svg id=\"cps-chart\" class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" \
         viewBox=\"0 0 {W} {h}\" width=\"100%\" role=\"img\" \
         aria-labelledby=\"cps-chart-title\" font-family=\"system-ui, sans-serif\" \
         font-size=\"12\"><title id=\"cps-chart-title\">Cost per success per strategy version \
         per day, USD (lower is cheaper)</title>"
    );
    // Y axis: gridlines and dollar ticks.
    let mut v = 0.0;
    while v <= ymax + ystep / 2.0 {
        let y = y_of(v);
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e6e9ef\"/>\
             <text class=\"ytick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" \
             fill=\"#5a6478\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            tick_label(v, ystep)
        );
        v += ystep;
    }
    let _ = write!(
        s,
        "<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\" \
         fill=\"#1d2330\">$ per success</text>",
        TOP + PLOT_H / 2.0,
        TOP + PLOT_H / 2.0
    );
    // X axis: a tick per day when they fit, else about eight.
    let every = ((span + 1.0) / 8.0).ceil().max(1.0) as i64;
    let mut d = first;
    let mut i = 0i64;
    while d <= last {
        // The last day is labelled unless it would crowd the tick before it.
        let last_tick = d == last && i % every > every / 2;
        if i % every == 0 || last_tick {
            let x = x_at(i as f64);
            let _ = write!(
                s,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" \
                 stroke=\"#8f9bb3\"/><text class=\"xtick\" x=\"{x:.1}\" y=\"{:.1}\" \
                 text-anchor=\"middle\" fill=\"#5a6478\">{}</text>",
                TOP + PLOT_H,
                TOP + PLOT_H + 5.0,
                TOP + PLOT_H + 18.0,
                d.format("%m-%d")
            );
        }
        let Some(next) = d.succ_opt() else { break };
        d = next;
        i += 1;
    }
    let _ = write!(
        s,
        "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{:.1}\" stroke=\"#1d2330\"/>\
         <line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#1d2330\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#1d2330\">day started \
         (UTC, {} to {})</text>",
        TOP + PLOT_H,
        W - RIGHT,
        TOP + PLOT_H,
        TOP + PLOT_H,
        LEFT + plot_w / 2.0,
        TOP + PLOT_H + 34.0,
        first,
        last
    );
    // One group per strategy version: line segments between consecutive days with a success.
    for (k, name) in names.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let dash = DASHES[(k / COLOURS.len()) % DASHES.len()];
        let dash_attr = if dash.is_empty() {
            String::new()
        } else {
            format!(" stroke-dasharray=\"{dash}\"")
        };
        let _ = write!(s, "<g class=\"series\" data-strategy=\"{}\">", esc(name));
        let mut segment: Vec<(f64, f64)> = Vec::new();
        let mut segments: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut points = String::new();
        for p in series.iter().filter(|p| p.strategy_version == *name) {
            match (p.cost_per_success, x_of(&p.day)) {
                (Some(c), Some(x)) => {
                    let y = y_of(c);
                    segment.push((x, y));
                    let _ = write!(
                        points,
                        "<circle class=\"point\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" \
                         fill=\"{colour}\"><title>{} · {}: ${c:.6} per success ({} executions, \
                         {} successes)</title></circle>",
                        esc(name),
                        esc(&p.day),
                        p.executions,
                        p.successes
                    );
                }
                _ => segments.push(std::mem::take(&mut segment)),
            }
        }
        segments.push(segment);
        for seg in segments.iter().filter(|seg| seg.len() > 1) {
            let pts: Vec<String> = seg.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = write!(
                s,
                "<polyline class=\"line\" points=\"{}\" fill=\"none\" stroke=\"{colour}\" \
                 stroke-width=\"2\"{dash_attr}/>",
                pts.join(" ")
            );
        }
        s.push_str(&points);
        let y = legend_top + LEGEND_ROW * k as f64;
        let _ = write!(
            s,
            "<g class=\"legend\"><line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" \
             stroke=\"{colour}\" stroke-width=\"3\"{dash_attr}/><circle cx=\"{:.1}\" \
             cy=\"{y:.1}\" r=\"4\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{:.1}\" \
             fill=\"#1d2330\">{}</text></g></g>",
            LEFT + 28.0,
            LEFT + 14.0,
            LEFT + 36.0,
            y + 4.0,
            esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(v: &str, day: &str, cps: Option<f64>) -> DayPoint {
        DayPoint {
            strategy_version: v.into(),
            day: day.into(),
            executions: 2,
            successes: u64::from(cps.is_some()),
            cost: cps.unwrap_or(0.5),
            cost_per_success: cps,
        }
    }

    #[test]
    fn one_series_per_strategy_version_with_gaps_and_escaped_names() {
        let svg = chart(&[
            point("a<b>", "2026-11-01", Some(0.02)),
            point("long/v1", "2026-11-01", Some(0.3)),
            point("a<b>", "2026-11-02", None),
            point("a<b>", "2026-11-03", Some(0.01)),
            point("long/v1", "2026-11-03", Some(0.2)),
        ]);
        assert_eq!(svg.matches("<g class=\"series\"").count(), 2);
        assert!(svg.contains("data-strategy=\"a&lt;b&gt;\"") && !svg.contains("a<b>"));
        // a<b> has a gap on the 2nd: two points, no line joining them.
        assert_eq!(svg.matches("class=\"point\"").count(), 4);
        assert_eq!(svg.matches("class=\"line\"").count(), 1);
        assert!(svg.contains(">$0.30<") || svg.contains(">$0.3<"), "{svg}");
        assert!(svg.contains(">11-01<") && svg.contains(">11-03<"));
        assert!(chart(&[]).contains("nothing to chart"));
    }

    #[test]
    fn ticks_are_round() {
        assert!((step(0.3, 4.0) - 0.1).abs() < 1e-12);
        assert!((step(0.02, 4.0) - 0.005).abs() < 1e-12);
        assert_eq!(tick_label(0.005, 0.005), "$0.005");
    }
}
