//! Upgrades of events written with an older `schema_version` to the current shape. Every
//! conversion of the log format lives here, one function per version step, so an old event
//! always still decodes.
//!
//! Version 1 (the pre-release format) differed from version 2 in five places:
//! - `ts` was epoch milliseconds (a number); now an RFC 3339 string;
//! - costs (`cost`, `est_cost`, `actual_cost`) were float USD; now integer micro-USD;
//! - `model.responded` had flat `tokens_in` / `tokens_out`; now `tokens: {in, out}`;
//! - `tool.called` named its idempotency key `key`; now `idempotency_key`;
//! - `exec.started` named the experiment arm `arm`; now `experiment_arm`.

use crate::error::DecodeError;
use crate::event::CURRENT_SCHEMA_VERSION;
use chrono::DateTime;
use serde_json::{Map, Value};

/// Upgrades `json`, written with `from`, to the current schema version and returns it re-encoded.
pub fn upgrade(json: &str, from: u16) -> Result<String, DecodeError> {
    let fail = |detail: String| DecodeError::Upgrade { from, detail };
    let mut value: Value = serde_json::from_str(json).map_err(|e| fail(e.to_string()))?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| fail("event is not a JSON object".into()))?;
    let mut version = from;
    while version < CURRENT_SCHEMA_VERSION {
        match version {
            1 => v1_to_v2(obj).map_err(fail)?,
            other => return Err(fail(format!("no upgrade path from schema_version {other}"))),
        }
        version += 1;
    }
    obj.insert("schema_version".into(), Value::from(CURRENT_SCHEMA_VERSION));
    serde_json::to_string(&value).map_err(|e| fail(e.to_string()))
}

fn v1_to_v2(obj: &mut Map<String, Value>) -> Result<(), String> {
    let ms = obj
        .get("ts")
        .and_then(Value::as_i64)
        .ok_or("v1 `ts` must be epoch milliseconds")?;
    let ts = DateTime::from_timestamp_millis(ms).ok_or(format!("v1 `ts` {ms} is out of range"))?;
    obj.insert("ts".into(), Value::String(ts.to_rfc3339()));

    let ty = obj
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let data = obj
        .get_mut("data")
        .and_then(Value::as_object_mut)
        .ok_or("v1 `data` must be an object")?;
    for field in ["cost", "est_cost", "actual_cost"] {
        if let Some(v) = data.get_mut(field) {
            *v = usd_to_micros(v).map_err(|e| format!("v1 `data.{field}`: {e}"))?;
        }
    }
    match ty.as_str() {
        "model.responded" => {
            let input = data.remove("tokens_in").unwrap_or(Value::from(0));
            let output = data.remove("tokens_out").unwrap_or(Value::from(0));
            data.insert(
                "tokens".into(),
                serde_json::json!({"in": input, "out": output}),
            );
        }
        "tool.called" => rename(data, "key", "idempotency_key"),
        "exec.started" => rename(data, "arm", "experiment_arm"),
        _ => {}
    }
    Ok(())
}

fn rename(data: &mut Map<String, Value>, from: &str, to: &str) {
    if let Some(v) = data.remove(from) {
        data.insert(to.into(), v);
    }
}

fn usd_to_micros(v: &Value) -> Result<Value, String> {
    match v {
        Value::Null => Ok(Value::Null),
        Value::Number(n) => {
            let usd = n.as_f64().ok_or("not a number")?;
            if !(usd.is_finite() && usd >= 0.0) {
                return Err(format!("cost {usd} is not a non-negative amount"));
            }
            // Rounded to the nearest micro-dollar: v1 floats cannot carry more precision.
            Ok(Value::from((usd * 1_000_000.0).round() as u64))
        }
        other => Err(format!("expected USD as a number, found {other}")),
    }
}
