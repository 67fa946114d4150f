//! The walker the contract parser is built on: a mapping that remembers which keys were read (so
//! the others are reported as unknown fields) and a list that collects every problem with its
//! field path.

use super::FieldProblems;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

#[derive(Default)]
pub(crate) struct Problems(pub(crate) FieldProblems);

impl Problems {
    pub(crate) fn add(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.0.push((path.into(), msg.into()));
    }
}

/// A mapping being walked: remembers which keys were read so the rest are reported as unknown.
pub(crate) struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
    seen: BTreeSet<&'static str>,
}

impl<'a> Obj<'a> {
    pub(crate) fn new(map: &'a Map<String, Value>, path: &str) -> Self {
        Self {
            map,
            path: path.to_owned(),
            seen: BTreeSet::new(),
        }
    }
    pub(crate) fn at(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }
    pub(crate) fn opt(&mut self, _p: &mut Problems, key: &'static str) -> Option<&'a Value> {
        self.seen.insert(key);
        self.map.get(key).filter(|v| !v.is_null())
    }
    pub(crate) fn req(&mut self, p: &mut Problems, key: &'static str) -> Option<&'a Value> {
        let v = self.opt(p, key);
        if v.is_none() {
            p.add(self.at(key), "is required");
        }
        v
    }
    pub(crate) fn typed<T>(
        &self,
        p: &mut Problems,
        key: &str,
        v: Option<&'a Value>,
        want: &str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Option<T> {
        let v = v?;
        let out = f(v);
        if out.is_none() {
            p.add(self.at(key), format!("must be {want}, found {v}"));
        }
        out
    }
    pub(crate) fn req_str(&mut self, p: &mut Problems, key: &'static str) -> Option<String> {
        let v = self.req(p, key);
        self.typed(p, key, v, "a string", |v| v.as_str().map(str::to_owned))
    }
    pub(crate) fn opt_str(&mut self, p: &mut Problems, key: &'static str) -> Option<String> {
        let v = self.opt(p, key);
        self.typed(p, key, v, "a string", |v| v.as_str().map(str::to_owned))
    }
    pub(crate) fn req_obj(
        &mut self,
        p: &mut Problems,
        key: &'static str,
    ) -> Option<&'a Map<String, Value>> {
        let v = self.req(p, key);
        self.typed(p, key, v, "a mapping", Value::as_object)
    }
    pub(crate) fn opt_obj(
        &mut self,
        p: &mut Problems,
        key: &'static str,
    ) -> Option<&'a Map<String, Value>> {
        let v = self.opt(p, key);
        self.typed(p, key, v, "a mapping", Value::as_object)
    }
    pub(crate) fn finish(self, p: &mut Problems) {
        for k in self.map.keys() {
            if !self.seen.contains(k.as_str()) {
                let known: Vec<_> = self.seen.iter().copied().collect();
                p.add(
                    self.at(k),
                    format!("unknown field (known here: {})", known.join(", ")),
                );
            }
        }
    }
}
