//! A batch of projection [`Change`]s as a handful of set-based PostgreSQL statements: every new
//! step, execution and sample row in one `INSERT … SELECT FROM unnest(…)` each, and the
//! per-execution counters folded in memory into one `UPDATE … FROM unnest(…)`. One statement per
//! event cost a server round of parse, plan and execute each, which capped catch-up at about
//! 9 000 events/s on this machine.
//!
//! Folding is exact because the counter updates commute (sums, and a minimum for "cost known")
//! and an execution's end comes after all of its other events: the end's absolute totals are
//! applied after the folded increments, as they would be one by one. Ratings are rare and
//! order-sensitive (the latest wins), so they stay one statement each, in order, last.

use crate::pg::int;
use crate::projection::Change;
use std::collections::HashMap;
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

/// The counters of one execution accumulated over a batch.
#[derive(Default)]
struct Delta {
    model_calls: i64,
    tokens_in: i64,
    tokens_out: i64,
    cost_micros: i64,
    cost_known: i32,
    tool_calls: i64,
    tool_failures: i64,
    gate_escalations: i64,
    gate_rejections: i64,
    retrievals: i64,
    steps_n: i64,
}

/// Column vectors, one per statement.
#[derive(Default)]
pub(crate) struct Bulk {
    s_offset: Vec<i64>,
    s_trace: Vec<String>,
    s_exec: Vec<String>,
    s_tenant: Vec<String>,
    s_seq: Vec<i64>,
    s_step: Vec<i64>,
    s_ts: Vec<String>,
    s_type: Vec<String>,
    s_summary: Vec<String>,
    s_model: Vec<Option<String>>,
    s_tin: Vec<Option<i64>>,
    s_tout: Vec<Option<i64>>,
    s_cost: Vec<Option<f64>>,
    s_latency: Vec<Option<i64>>,
    s_tool: Vec<Option<String>>,
    s_status: Vec<Option<String>>,
    s_output: Vec<Option<String>>,
    s_verdict: Vec<Option<String>>,
    s_chunks: Vec<Option<String>>,

    x_exec: Vec<String>,
    x_trace: Vec<String>,
    x_tenant: Vec<String>,
    x_strategy: Vec<String>,
    x_arm: Vec<Option<String>>,
    x_experiment: Vec<Option<String>>,
    x_unit: Vec<Option<String>>,
    x_replay: Vec<Option<String>>,
    x_goal: Vec<String>,
    x_started: Vec<String>,

    delta_of: HashMap<String, usize>,
    deltas: Vec<(String, Delta)>,

    f_exec: Vec<String>,
    f_at: Vec<String>,
    f_outcome: Vec<String>,
    f_success: Vec<i32>,
    f_steps: Vec<i64>,
    f_tin: Vec<i64>,
    f_tout: Vec<i64>,
    f_cost: Vec<i64>,
    f_known: Vec<i32>,

    c_exec: Vec<String>,
    c_at: Vec<String>,

    r_offset: Vec<i64>,
    r_trace: Vec<String>,
    r_exec: Vec<String>,
    r_tenant: Vec<String>,
    r_seq: Vec<i64>,
    r_step: Vec<i64>,
    r_ts: Vec<String>,
    r_query: Vec<String>,
    r_version: Vec<String>,
    r_chunks: Vec<String>,

    rated: Vec<Change>,
}

impl Bulk {
    fn delta(&mut self, exec: String) -> &mut Delta {
        let i = match self.delta_of.get(&exec) {
            Some(i) => *i,
            None => {
                self.delta_of.insert(exec.clone(), self.deltas.len());
                self.deltas.push((
                    exec,
                    Delta {
                        cost_known: 1,
                        ..Delta::default()
                    },
                ));
                self.deltas.len() - 1
            }
        };
        &mut self.deltas[i].1
    }

    /// Adds one change, in offset order.
    pub(crate) fn push(&mut self, change: Change) {
        match change {
            Change::Step(x) => {
                let r = x.row;
                self.s_offset.push(int(x.log_offset));
                self.s_trace.push(x.trace_id);
                self.s_exec.push(x.exec_id);
                self.s_tenant.push(x.tenant);
                self.s_seq.push(int(x.seq));
                self.s_step.push(i64::from(x.step_n));
                self.s_ts.push(x.ts);
                self.s_type.push(x.event_type.to_owned());
                self.s_summary.push(r.summary);
                self.s_model.push(r.model);
                self.s_tin.push(r.tokens_in.map(int));
                self.s_tout.push(r.tokens_out.map(int));
                self.s_cost.push(r.cost);
                self.s_latency.push(r.latency_ms.map(int));
                self.s_tool.push(r.tool);
                self.s_status.push(r.status);
                self.s_output.push(r.output_ref);
                self.s_verdict.push(r.gate_verdict);
                self.s_chunks.push(r.memory_chunks);
            }
            Change::Started(x) => {
                self.x_exec.push(x.exec_id);
                self.x_trace.push(x.trace_id);
                self.x_tenant.push(x.tenant);
                self.x_strategy.push(x.strategy_version);
                self.x_arm.push(x.experiment_arm);
                self.x_experiment.push(x.experiment);
                self.x_unit.push(x.experiment_unit);
                self.x_replay.push(x.replay_of);
                self.x_goal.push(x.goal);
                self.x_started.push(x.started_at);
            }
            Change::ModelResponded {
                exec_id,
                tokens_in,
                tokens_out,
                cost_micros,
                cost_known,
            } => {
                let d = self.delta(exec_id);
                d.model_calls += 1;
                d.tokens_in += int(tokens_in);
                d.tokens_out += int(tokens_out);
                d.cost_micros += int(cost_micros);
                d.cost_known = d.cost_known.min(i32::from(cost_known));
            }
            Change::ToolResult {
                exec_id,
                failed,
                cost_micros,
                cost_known,
            } => {
                let d = self.delta(exec_id);
                d.tool_calls += 1;
                d.tool_failures += i64::from(failed);
                d.cost_micros += int(cost_micros);
                d.cost_known = d.cost_known.min(i32::from(cost_known));
            }
            Change::GateRequested { exec_id } => self.delta(exec_id).gate_escalations += 1,
            Change::GateRejected { exec_id } => self.delta(exec_id).gate_rejections += 1,
            Change::Retrieved { exec_id } => self.delta(exec_id).retrievals += 1,
            Change::StepCompleted { exec_id } => self.delta(exec_id).steps_n += 1,
            Change::Finished {
                exec_id,
                finished_at,
                outcome,
                success,
                steps_n,
                tokens_in,
                tokens_out,
                cost_micros,
                cost_known,
            } => {
                self.f_exec.push(exec_id);
                self.f_at.push(finished_at);
                self.f_outcome.push(outcome.to_owned());
                self.f_success.push(i32::from(success));
                self.f_steps.push(i64::from(steps_n));
                self.f_tin.push(int(tokens_in));
                self.f_tout.push(int(tokens_out));
                self.f_cost.push(int(cost_micros));
                self.f_known.push(i32::from(cost_known));
            }
            Change::Cancelled {
                exec_id,
                finished_at,
            } => {
                self.c_exec.push(exec_id);
                self.c_at.push(finished_at);
            }
            Change::Sampled(x) => {
                self.r_offset.push(int(x.log_offset));
                self.r_trace.push(x.trace_id);
                self.r_exec.push(x.exec_id);
                self.r_tenant.push(x.tenant);
                self.r_seq.push(int(x.seq));
                self.r_step.push(i64::from(x.step_n));
                self.r_ts.push(x.ts);
                self.r_query.push(x.query);
                self.r_version.push(x.memory_version);
                self.r_chunks.push(x.chunks);
            }
            rated @ (Change::Rated { .. } | Change::Feedback { .. }) => self.rated.push(rated),
        }
    }

    /// Runs the batch's statements in `tx`, in the order that keeps one-by-one semantics.
    /// Boxed where its types are concrete, so the callers' futures stay provably `Send`.
    pub(crate) fn apply<'a>(
        self,
        tx: &'a Transaction<'a>,
    ) -> futures::future::BoxFuture<'a, Result<(), tokio_postgres::Error>> {
        Box::pin(self.run(tx))
    }

    async fn run(self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        if !self.s_offset.is_empty() {
            let p: [&(dyn ToSql + Sync); 19] = [
                &self.s_offset,
                &self.s_trace,
                &self.s_exec,
                &self.s_tenant,
                &self.s_seq,
                &self.s_step,
                &self.s_ts,
                &self.s_type,
                &self.s_summary,
                &self.s_model,
                &self.s_tin,
                &self.s_tout,
                &self.s_cost,
                &self.s_latency,
                &self.s_tool,
                &self.s_status,
                &self.s_output,
                &self.s_verdict,
                &self.s_chunks,
            ];
            tx.execute(
                "INSERT INTO traces.steps (log_offset, trace_id, exec_id, tenant, seq, step_n, ts,
                     event_type, summary, model, tokens_in, tokens_out, cost, latency_ms, tool,
                     status, output_ref, gate_verdict, memory_chunks)
                 SELECT a, b, c, d, e, f, CAST(g AS timestamptz), h, i, j, k, l, m, n, o, p, q, r, s
                 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                     $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[],
                     $12::bigint[], $13::float8[], $14::bigint[], $15::text[], $16::text[],
                     $17::text[], $18::text[], $19::text[])
                     AS t(a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, s)",
                &p,
            )
            .await?;
        }
        if !self.x_exec.is_empty() {
            let p: [&(dyn ToSql + Sync); 10] = [
                &self.x_exec,
                &self.x_trace,
                &self.x_tenant,
                &self.x_strategy,
                &self.x_arm,
                &self.x_experiment,
                &self.x_unit,
                &self.x_replay,
                &self.x_goal,
                &self.x_started,
            ];
            tx.execute(
                "INSERT INTO gold.executions (exec_id, trace_id, tenant, strategy_version,
                     experiment_arm, experiment, experiment_unit, replay_of, goal, started_at)
                 SELECT a, b, c, d, e, x, u, f, g, CAST(h AS timestamptz)
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
                     AS t(a, b, c, d, e, x, u, f, g, h)
                 ON CONFLICT (exec_id) DO NOTHING",
                &p,
            )
            .await?;
        }
        if !self.deltas.is_empty() {
            let col = |f: fn(&Delta) -> i64| -> Vec<i64> {
                self.deltas.iter().map(|(_, d)| f(d)).collect()
            };
            let exec: Vec<&str> = self.deltas.iter().map(|(e, _)| e.as_str()).collect();
            let known: Vec<i32> = self.deltas.iter().map(|(_, d)| d.cost_known).collect();
            let cols = [
                col(|d| d.model_calls),
                col(|d| d.tokens_in),
                col(|d| d.tokens_out),
                col(|d| d.cost_micros),
                col(|d| d.tool_calls),
                col(|d| d.tool_failures),
                col(|d| d.gate_escalations),
                col(|d| d.gate_rejections),
                col(|d| d.retrievals),
                col(|d| d.steps_n),
            ];
            let p: [&(dyn ToSql + Sync); 12] = [
                &exec, &cols[0], &cols[1], &cols[2], &cols[3], &known, &cols[4], &cols[5],
                &cols[6], &cols[7], &cols[8], &cols[9],
            ];
            tx.execute(
                "UPDATE gold.executions AS x SET
                     model_calls = x.model_calls + d.mc, tokens_in = x.tokens_in + d.ti,
                     tokens_out = x.tokens_out + d.tt, cost_micros = x.cost_micros + d.cm,
                     cost_known = LEAST(x.cost_known, d.ck), tool_calls = x.tool_calls + d.tc,
                     tool_failures = x.tool_failures + d.tf,
                     gate_escalations = x.gate_escalations + d.ge,
                     gate_rejections = x.gate_rejections + d.gr,
                     retrievals = x.retrievals + d.rt, steps_n = x.steps_n + d.sn
                 FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                     $6::int[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[],
                     $11::bigint[], $12::bigint[])
                     AS d(exec_id, mc, ti, tt, cm, ck, tc, tf, ge, gr, rt, sn)
                 WHERE x.exec_id = d.exec_id",
                &p,
            )
            .await?;
        }
        if !self.f_exec.is_empty() {
            let p: [&(dyn ToSql + Sync); 9] = [
                &self.f_exec,
                &self.f_at,
                &self.f_outcome,
                &self.f_success,
                &self.f_steps,
                &self.f_tin,
                &self.f_tout,
                &self.f_cost,
                &self.f_known,
            ];
            tx.execute(
                "UPDATE gold.executions AS x SET finished_at = CAST(d.at AS timestamptz),
                     outcome = d.outcome, outcome_success = d.ok, steps_n = d.sn,
                     tokens_in = d.ti, tokens_out = d.tt, cost_micros = d.cm, cost_known = d.ck
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[],
                     $6::bigint[], $7::bigint[], $8::bigint[], $9::int[])
                     AS d(exec_id, at, outcome, ok, sn, ti, tt, cm, ck)
                 WHERE x.exec_id = d.exec_id",
                &p,
            )
            .await?;
        }
        if !self.c_exec.is_empty() {
            tx.execute(
                "UPDATE gold.executions AS x SET finished_at = CAST(d.at AS timestamptz),
                     outcome = 'cancelled', outcome_success = 0
                 FROM unnest($1::text[], $2::text[]) AS d(exec_id, at)
                 WHERE x.exec_id = d.exec_id",
                &[&self.c_exec, &self.c_at],
            )
            .await?;
        }
        if !self.r_offset.is_empty() {
            let p: [&(dyn ToSql + Sync); 10] = [
                &self.r_offset,
                &self.r_trace,
                &self.r_exec,
                &self.r_tenant,
                &self.r_seq,
                &self.r_step,
                &self.r_ts,
                &self.r_query,
                &self.r_version,
                &self.r_chunks,
            ];
            tx.execute(
                "INSERT INTO traces.retrieval_samples (log_offset, trace_id, exec_id, tenant, seq,
                     step_n, ts, query, memory_version, chunks)
                 SELECT a, b, c, d, e, f, CAST(g AS timestamptz), h, i, j
                 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                     $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[])
                     AS t(a, b, c, d, e, f, g, h, i, j)",
                &p,
            )
            .await?;
        }
        for r in self.rated {
            if let Change::Feedback {
                tenant,
                exec_id,
                rating,
            } = &r
            {
                tx.execute(
                    "UPDATE gold.executions SET feedback_count = feedback_count + 1,
                         feedback_sum = feedback_sum + $3
                     WHERE exec_id = $2 AND tenant = $1",
                    &[tenant, exec_id, &i64::from(*rating)],
                )
                .await?;
            } else if let Change::Rated {
                tenant,
                exec_id,
                seq,
                rating,
                rated_by,
                rated_at,
                note,
            } = r
            {
                tx.execute(
                    "UPDATE traces.retrieval_samples SET rating = $4, rated_by = $5,
                         rated_at = CAST($6::text AS timestamptz), rating_note = $7
                     WHERE exec_id = $2 AND seq = $3 AND tenant = $1",
                    &[
                        &tenant,
                        &exec_id,
                        &int(seq),
                        &i32::from(rating),
                        &rated_by,
                        &rated_at,
                        &note,
                    ],
                )
                .await?;
            }
        }
        Ok(())
    }
}
