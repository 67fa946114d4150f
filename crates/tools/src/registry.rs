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
        for (path, text) in sources {
            match parse_contract(text, path, builtins) {
                Ok(c) => {
                    if let Some(first) = tools.get(&c.name) {
                        problems.push(Problem {
                            file: path.clone(),
                            path: "name".into(),
                            message: format!(
                                "tool {:?} is already defined in {}",
                                c.name,
                                first.source.display()
                            ),
                        });
                    } else {
                        tools.insert(c.name.clone(), Arc::new(c));
                    }
                }
                Err(list) => problems.extend(list.into_iter().map(|(p, m)| Problem {
                    file: path.clone(),
                    path: p,
                    message: m,
                })),
            }
        }
        // Cross-file rules: a compensation must name a registered tool.
        for c in tools.values() {
            if let Some(comp) = &c.failure_policy.compensation {
                if !tools.contains_key(comp) {
                    problems.push(Problem {
                        file: c.source.clone(),
                        path: "failure_policy.compensation".into(),
                        message: format!("names {comp:?}, which is not a tool in this folder"),
                    });
                } else if comp == &c.name {
                    problems.push(Problem {
                        file: c.source.clone(),
                        path: "failure_policy.compensation".into(),
                        message: "a tool cannot compensate itself".into(),
                    });
                }
            }
        }
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
