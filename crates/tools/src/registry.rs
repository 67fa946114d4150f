//! The registry: every contract of a folder (`tools/*.yaml`, one tool a file), loaded and checked
//! together. Loading reports every problem of every file, one per line as
//! `<file>: <field path>: <what is wrong>`, and yields a registry only when there are none.

use crate::contract::Contract;
use crate::error::ToolError;
use crate::parse::parse_contract;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One thing wrong with one contract file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// Dotted path of the field (`failure_policy.retryable.0`), or `(file)`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.file.display(),
            self.path,
            self.message
        )
    }
}

/// Validated contracts by tool name.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    tools: BTreeMap<String, Arc<Contract>>,
}

impl Registry {
    /// Loads every `*.yaml` / `*.yml` file of `dir`. `builtins` are the builtin function names
    /// that exist, if known (then an unknown one is a problem).
    pub fn load_dir(dir: &Path, builtins: Option<&BTreeSet<String>>) -> Result<Self, ToolError> {
        let entries = std::fs::read_dir(dir).map_err(|source| ToolError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ToolError::Io {
                path: dir.to_owned(),
                source,
            })?;
            let path = entry.path();
            if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                files.push(path);
            }
        }
        files.sort();
        let mut sources = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|source| ToolError::Io {
                path: path.clone(),
                source,
            })?;
            sources.push((path, text));
        }
        Self::from_sources(&sources, builtins)
    }

    /// Builds a registry from `(file name, YAML text)` pairs (what `load_dir` reads).
    pub fn from_sources(
        sources: &[(PathBuf, String)],
        builtins: Option<&BTreeSet<String>>,
    ) -> Result<Self, ToolError> {
        let mut problems = Vec::new();
        let mut tools: BTreeMap<String, Arc<Contract>> = BTreeMap::new();
        // Every file's declared name and compensation, valid or not: cross-file rules are
        // checked over these in the same pass as the per-file ones, so one run of
        // `keel tools check` reports everything.
        let mut declared: Vec<(&Path, Option<String>, Option<String>)> = Vec::new();
        for (path, text) in sources {
            match parse_contract(text, path, builtins) {
                Ok(c) => {
                    declared.push((
                        path,
                        Some(c.name.clone()),
                        c.failure_policy.compensation.clone(),
                    ));
                    tools.entry(c.name.clone()).or_insert_with(|| Arc::new(c));
                }
                Err(rejected) => {
                    declared.push((path, rejected.name, rejected.compensation));
                    problems.extend(rejected.problems.into_iter().map(|(p, m)| Problem {
                        file: path.clone(),
                        path: p,
                        message: m,
                    }));
                }
            }
        }
        let mut first_file: BTreeMap<&str, &Path> = BTreeMap::new();
        for (path, name, _) in &declared {
            let Some(name) = name else { continue };
            if let Some(first) = first_file.get(name.as_str()) {
                problems.push(Problem {
                    file: path.to_path_buf(),
                    path: "name".into(),
                    message: format!("tool {name:?} is already defined in {}", first.display()),
                });
            } else {
                first_file.insert(name, path);
            }
        }
        // A compensation must name a tool of this folder (one with problems of its own counts:
        // those are reported against its file).
        for (path, name, comp) in &declared {
            let Some(comp) = comp else { continue };
            let message = if !first_file.contains_key(comp.as_str()) {
                format!("names {comp:?}, which is not a tool in this folder")
            } else if name.as_ref() == Some(comp) {
                "a tool cannot compensate itself".into()
            } else {
                continue;
            };
            problems.push(Problem {
                file: path.to_path_buf(),
                path: "failure_policy.compensation".into(),
                message,
            });
        }
        // Report file by file, in the order the files were read.
        let order: BTreeMap<&Path, usize> = sources
            .iter()
            .enumerate()
            .map(|(i, (p, _))| (p.as_path(), i))
            .collect();
        problems.sort_by_key(|p| order.get(p.file.as_path()).copied().unwrap_or(usize::MAX));
        if problems.is_empty() {
            Ok(Self { tools })
        } else {
            Err(ToolError::Contracts(problems))
        }
    }

    /// The contract named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Contract>> {
        self.tools.get(name)
    }

    /// Replaces the adapter of tool `name` (replay answers tools from a recording this way);
    /// false when there is no such tool. Everything else in the contract stays as declared.
    pub fn set_adapter(&mut self, name: &str, adapter: crate::contract::AdapterSpec) -> bool {
        match self.tools.get_mut(name) {
            Some(c) => {
                Arc::make_mut(c).adapter = adapter;
                true
            }
            None => false,
        }
    }

    /// Every contract, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Contract>> {
        self.tools.values()
    }

    /// How many tools.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}
