//! The lakehouse export: the projections as Parquet, Hive-partitioned by date and tenant.
//!
//! Layout: `OUT/{table}/date=YYYY-MM-DD/tenant={tenant}/part-0.parquet` for `steps` (date of the
//! event), `executions` (date the execution started) and `retrieval_samples`. Every file of a
//! table has the same explicit schema ([`schema`]): integers as INT64, money as DOUBLE dollars,
//! times as TIMESTAMP(ms, UTC), the rest as UTF8; the partition columns `date` and `tenant` are in
//! the path (and `tenant` also in the file, so a single file stands alone). Snappy-compressed.
//! A partition is written to a temporary file and renamed, so a reader never sees half a file.
//!
//! Any engine that reads Hive-partitioned Parquet (DuckDB, Spark, Trino, DataFusion) reads it; the
//! tests check DuckDB gets the same numbers as `keel sql`.

use crate::error::{ObserveError, Result};
use crate::sql::Scope;
use crate::store::{ProjectionStore, qualified};
use arrow_array::builder::{
    Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Column kinds of the export schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// INT64.
    Int,
    /// DOUBLE.
    Float,
    /// UTF8.
    Text,
    /// TIMESTAMP(ms, UTC), from the projection's RFC 3339 text.
    Time,
}

/// One exported table: its name, the column holding the partition date, and its columns.
pub struct TableSpec {
    /// Table name (also the directory).
    pub name: &'static str,
    /// Column whose date partitions the rows.
    pub date_column: &'static str,
    /// Ordering key within a partition.
    pub order_by: &'static str,
    /// Columns, in file order.
    pub columns: &'static [(&'static str, Kind)],
}

/// The stable export schemas. Add columns only at the end; never retype one.
pub const TABLES: &[TableSpec] = &[
    TableSpec {
        name: "steps",
        date_column: "ts",
        order_by: "log_offset",
        columns: &[
            ("log_offset", Kind::Int),
            ("trace_id", Kind::Text),
            ("exec_id", Kind::Text),
            ("tenant", Kind::Text),
            ("seq", Kind::Int),
            ("step_n", Kind::Int),
            ("ts", Kind::Time),
            ("event_type", Kind::Text),
            ("summary", Kind::Text),
            ("model", Kind::Text),
            ("tokens_in", Kind::Int),
            ("tokens_out", Kind::Int),
            ("cost", Kind::Float),
            ("latency_ms", Kind::Int),
            ("tool", Kind::Text),
            ("status", Kind::Text),
            ("output_ref", Kind::Text),
            ("gate_verdict", Kind::Text),
            ("memory_chunks", Kind::Text),
        ],
    },
    TableSpec {
        name: "executions",
        date_column: "started_at",
        order_by: "exec_id",
        columns: &[
            ("exec_id", Kind::Text),
            ("trace_id", Kind::Text),
            ("tenant", Kind::Text),
            ("strategy_version", Kind::Text),
            ("experiment_arm", Kind::Text),
            ("experiment", Kind::Text),
            ("experiment_unit", Kind::Text),
            ("replay_of", Kind::Text),
            ("goal", Kind::Text),
            ("started_at", Kind::Time),
            ("finished_at", Kind::Time),
            ("outcome", Kind::Text),
            ("outcome_success", Kind::Int),
            ("steps_n", Kind::Int),
            ("tokens_in", Kind::Int),
            ("tokens_out", Kind::Int),
            ("total_cost", Kind::Float),
            ("model_calls", Kind::Int),
            ("tool_calls", Kind::Int),
            ("tool_failures", Kind::Int),
            ("gate_escalations", Kind::Int),
            ("gate_rejections", Kind::Int),
            ("retrievals", Kind::Int),
            ("feedback_count", Kind::Int),
            ("feedback_rating", Kind::Float),
        ],
    },
    TableSpec {
        name: "retrieval_samples",
        date_column: "ts",
        order_by: "log_offset",
        columns: &[
            ("log_offset", Kind::Int),
            ("trace_id", Kind::Text),
            ("exec_id", Kind::Text),
            ("tenant", Kind::Text),
            ("seq", Kind::Int),
            ("step_n", Kind::Int),
            ("ts", Kind::Time),
            ("query", Kind::Text),
            ("memory_version", Kind::Text),
            ("chunks", Kind::Text),
            ("rating", Kind::Int),
            ("rated_by", Kind::Text),
            ("rated_at", Kind::Time),
            ("rating_note", Kind::Text),
        ],
    },
];

/// The Arrow schema of an exported table.
pub fn schema(spec: &TableSpec) -> Schema {
    Schema::new(
        spec.columns
            .iter()
            .map(|(name, kind)| {
                let ty = match kind {
                    Kind::Int => DataType::Int64,
                    Kind::Float => DataType::Float64,
                    Kind::Text => DataType::Utf8,
                    Kind::Time => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                };
                Field::new(*name, ty, true)
            })
            .collect::<Vec<_>>(),
    )
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Files written.
    pub files: usize,
    /// Rows written, all tables.
    pub rows: usize,
}

/// Writes every partition of every table whose date is `since` or later (all when `None`),
/// reading the projections through `store` (either backend).
pub async fn export(
    store: &dyn ProjectionStore,
    out: &Path,
    since: Option<&str>,
) -> Result<ExportReport> {
    let mut report = ExportReport::default();
    for spec in TABLES {
        let day = store.day(spec.date_column);
        let rows = store
            .query(
                &Scope::Admin,
                &format!(
                    "SELECT DISTINCT {day}, tenant FROM {} WHERE {day} >= '{}' ORDER BY 1, 2",
                    qualified(spec.name),
                    literal(since.unwrap_or(""))
                ),
            )
            .await?;
        for r in rows.rows {
            let (Some(date), Some(tenant)) = (r[0].as_str(), r[1].as_str()) else {
                continue;
            };
            report.rows += write_partition(store, out, spec, date, tenant).await?;
            report.files += 1;
        }
    }
    Ok(report)
}

fn literal(v: &str) -> String {
    v.replace('\'', "''")
}

/// Hive partition values: keep `[A-Za-z0-9_.-]`, percent-encode the rest.
fn path_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"_.-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn write_partition(
    store: &dyn ProjectionStore,
    out: &Path,
    spec: &TableSpec,
    date: &str,
    tenant: &str,
) -> Result<usize> {
    let cols: Vec<&str> = spec.columns.iter().map(|(n, _)| *n).collect();
    let rows = store
        .query(
            &Scope::Admin,
            &format!(
                "SELECT {} FROM {} WHERE {} = '{}' AND tenant = '{}' ORDER BY {}",
                cols.join(", "),
                qualified(spec.name),
                store.day(spec.date_column),
                literal(date),
                literal(tenant),
                spec.order_by
            ),
        )
        .await?;
    let mut builders: Vec<Col> = spec.columns.iter().map(|(_, k)| Col::new(*k)).collect();
    for row in &rows.rows {
        for (i, b) in builders.iter_mut().enumerate() {
            b.push(&row[i]).map_err(|detail| ObserveError::Export {
                path: out.to_owned(),
                detail: format!("{}.{}: {detail}", spec.name, spec.columns[i].0),
            })?;
        }
    }
    let n = rows.rows.len();
    let schema = Arc::new(schema(spec));
    let arrays: Vec<ArrayRef> = builders.into_iter().map(Col::finish).collect();
    let dir: PathBuf = out
        .join(spec.name)
        .join(format!("date={}", path_value(date)))
        .join(format!("tenant={}", path_value(tenant)));
    let export_err = |detail: String| ObserveError::Export {
        path: dir.clone(),
        detail,
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| export_err(format!("creating the directory: {e}")))?;
    let batch = RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| export_err(format!("building the batch: {e}")))?;
    let tmp = dir.join("part-0.parquet.tmp");
    let file = std::fs::File::create(&tmp)
        .map_err(|e| export_err(format!("creating {}: {e}", tmp.display())))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(file, schema, Some(props))
        .map_err(|e| export_err(format!("starting the Parquet writer: {e}")))?;
    writer
        .write(&batch)
        .map_err(|e| export_err(format!("writing rows: {e}")))?;
    writer
        .close()
        .map_err(|e| export_err(format!("closing the file: {e}")))?;
    std::fs::rename(&tmp, dir.join("part-0.parquet"))
        .map_err(|e| export_err(format!("renaming into place: {e}")))?;
    Ok(n)
}

enum Col {
    Int(Int64Builder),
    Float(Float64Builder),
    Text(StringBuilder),
    Time(TimestampMillisecondBuilder),
}

impl Col {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Int => Col::Int(Int64Builder::new()),
            Kind::Float => Col::Float(Float64Builder::new()),
            Kind::Text => Col::Text(StringBuilder::new()),
            Kind::Time => Col::Time(TimestampMillisecondBuilder::new().with_timezone("UTC")),
        }
    }

    fn push(&mut self, v: &Value) -> std::result::Result<(), String> {
        match (self, v) {
            (Col::Int(b), Value::Null) => b.append_null(),
            (Col::Float(b), Value::Null) => b.append_null(),
            (Col::Text(b), Value::Null) => b.append_null(),
            (Col::Time(b), Value::Null) => b.append_null(),
            (Col::Int(b), Value::Number(n)) if n.is_i64() || n.is_u64() => {
                b.append_value(n.as_i64().ok_or_else(|| format!("{n} overflows INT64"))?)
            }
            (Col::Float(b), Value::Number(n)) => {
                b.append_value(n.as_f64().ok_or_else(|| format!("{n} is not a number"))?)
            }
            (Col::Text(b), Value::String(t)) => b.append_value(t),
            (Col::Time(b), Value::String(s)) => {
                let ts = chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))?;
                b.append_value(ts.timestamp_millis());
            }
            (_, other) => return Err(format!("unexpected value {other}")),
        }
        Ok(())
    }

    fn finish(self) -> ArrayRef {
        match self {
            Col::Int(mut b) => Arc::new(b.finish()),
            Col::Float(mut b) => Arc::new(b.finish()),
            Col::Text(mut b) => Arc::new(b.finish()),
            Col::Time(mut b) => Arc::new(b.finish()),
        }
    }
}
