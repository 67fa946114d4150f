//! Builtin tools: Rust functions registered by name, looked up by a contract's
//! `adapter: {kind: builtin, function: <name>}`.

use super::{Adapter, AdapterCall, AdapterError};
use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A builtin: `(args, idempotency key) -> output`.
pub type BuiltinFn = Arc<
    dyn Fn(Value, Option<String>) -> BoxFuture<'static, Result<Value, AdapterError>> + Send + Sync,
>;

/// Registered builtin functions.
#[derive(Clone, Default)]
pub struct Builtins {
    fns: BTreeMap<String, (BuiltinFn, bool)>,
}

impl Builtins {
    /// Registers `f` as `name`. `honours_key`: `f` deduplicates on the idempotency key itself.
    pub fn register(&mut self, name: &str, honours_key: bool, f: BuiltinFn) {
        self.fns.insert(name.to_owned(), (f, honours_key));
    }

    /// The registered names (for `Registry::load_dir`).
    pub fn names(&self) -> BTreeSet<String> {
        self.fns.keys().cloned().collect()
    }

    /// The adapter for `name`, if registered.
    pub fn adapter(&self, name: &str) -> Option<BuiltinAdapter> {
        self.fns.get(name).map(|(f, honours)| BuiltinAdapter {
            f: f.clone(),
            honours_key: *honours,
        })
    }
}

/// One builtin function as an adapter.
#[derive(Clone)]
pub struct BuiltinAdapter {
    f: BuiltinFn,
    honours_key: bool,
}

#[async_trait]
impl Adapter for BuiltinAdapter {
    async fn call(&self, call: AdapterCall<'_>) -> Result<Value, AdapterError> {
        (self.f)(call.args.clone(), call.idempotency_key.map(str::to_owned)).await
    }

    fn honours_idempotency_key(&self) -> bool {
        self.honours_key
    }
}
