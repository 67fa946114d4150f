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

use crate::error::{ObserveError, Result, store};
use arrow_array::builder::{
    Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeSet;
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
            ("step_n", Kind::Int),
            ("query", Kind::Text),
            ("memory_version", Kind::Text),
            ("chunks", Kind::Text),
            ("rating", Kind::Int),
            ("rated_by", Kind::Text),
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

/// Writes every partition of every table whose date is `since` or later (all when `None`).
pub fn export(projections: &Path, out: &Path, since: Option<&str>) -> Result<ExportReport> {
    let conn = Connection::open_with_flags(
        projections,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(store(projections, "opening the projections for export"))?;
    let mut report = ExportReport::default();
    for spec in TABLES {
        let partitions = partitions(&conn, projections, spec, since)?;
        for (date, tenant) in partitions {
            report.rows += write_partition(&conn, projections, out, spec, &date, &tenant)?;
            report.files += 1;
        }
    }
    Ok(report)
}

fn partitions(
    conn: &Connection,
    path: &Path,
    spec: &TableSpec,
    since: Option<&str>,
) -> Result<BTreeSet<(String, String)>> {
    let date = date_expr(spec);
    let sql = format!(
        "SELECT DISTINCT {date}, tenant FROM {} WHERE {date} >= ?1",
        spec.name
    );
    let mut stmt = conn
        .prepare(&sql)
        .map_err(store(path, "listing partitions"))?;
    let rows = stmt
        .query_map([since.unwrap_or("")], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(store(path, "listing partitions"))?;
    rows.collect::<std::result::Result<_, _>>()
        .map_err(store(path, "listing partitions"))
}

fn date_expr(spec: &TableSpec) -> String {
    if spec.name == "retrieval_samples" {
        // Samples carry no time of their own: the time of the retrieval's step row.
        "(SELECT substr(s.ts, 1, 10) FROM steps AS s WHERE s.log_offset = retrieval_samples.log_offset)".into()
    } else {
        format!("substr({}, 1, 10)", spec.date_column)
    }
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

fn write_partition(
    conn: &Connection,
    path: &Path,
    out: &Path,
    spec: &TableSpec,
    date: &str,
    tenant: &str,
) -> Result<usize> {
    let cols: Vec<&str> = spec.columns.iter().map(|(n, _)| *n).collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = ?1 AND tenant = ?2 ORDER BY {}",
        cols.join(", "),
        spec.name,
        date_expr(spec),
        spec.order_by
    );
    let mut stmt = conn
        .prepare(&sql)
        .map_err(store(path, "reading a partition"))?;
    let mut builders: Vec<Col> = spec.columns.iter().map(|(_, k)| Col::new(*k)).collect();
    let mut rows = stmt
        .query([date, tenant])
        .map_err(store(path, "reading a partition"))?;
    let mut n = 0usize;
    while let Some(row) = rows.next().map_err(store(path, "reading a partition"))? {
        for (i, b) in builders.iter_mut().enumerate() {
            let v = row.get_ref(i).map_err(store(path, "reading a partition"))?;
            b.push(v).map_err(|detail| ObserveError::Export {
                path: path.to_owned(),
                detail: format!("{}.{}: {detail}", spec.name, spec.columns[i].0),
            })?;
        }
        n += 1;
    }
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

    fn push(&mut self, v: ValueRef<'_>) -> std::result::Result<(), String> {
        match (self, v) {
            (Col::Int(b), ValueRef::Null) => b.append_null(),
            (Col::Float(b), ValueRef::Null) => b.append_null(),
            (Col::Text(b), ValueRef::Null) => b.append_null(),
            (Col::Time(b), ValueRef::Null) => b.append_null(),
            (Col::Int(b), ValueRef::Integer(i)) => b.append_value(i),
            (Col::Float(b), ValueRef::Real(f)) => b.append_value(f),
            (Col::Float(b), ValueRef::Integer(i)) => b.append_value(i as f64),
            (Col::Text(b), ValueRef::Text(t)) => b.append_value(String::from_utf8_lossy(t)),
            (Col::Time(b), ValueRef::Text(t)) => {
                let s = String::from_utf8_lossy(t);
                let ts = chrono::DateTime::parse_from_rfc3339(&s)
                    .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))?;
                b.append_value(ts.timestamp_millis());
            }
            (_, other) => return Err(format!("unexpected value {other:?}")),
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
