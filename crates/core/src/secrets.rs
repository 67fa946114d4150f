//! Named secrets, as the libraries see them: a contract, a strategy or a configuration names a
//! secret (an API key's variable, a header's variable, an OAuth client secret's variable) and the
//! library asks a [`SecretSource`] for its value. Where values come from is the edge's business:
//! the `keel` binary answers from the process environment; no library reads the environment.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Answers a secret's value by its name. Implementations never print values: they have no
/// `Debug` of their contents, and callers put only the name in errors.
pub trait SecretSource: Send + Sync {
    /// The value named `name`, or `None` if there is none (an empty value is returned as is:
    /// each caller decides whether empty counts as missing, as it did when reading variables).
    fn get(&self, name: &str) -> Option<String>;
}

/// No secrets at all: what a wiring without credentials (tests, scripted models) hands down.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSecrets;

impl SecretSource for NoSecrets {
    fn get(&self, _name: &str) -> Option<String> {
        None
    }
}

/// Secrets held in memory, by name (a caller that has them from elsewhere than the
/// environment, such as a vault, or a test).
impl SecretSource for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

/// The shared handle libraries keep (a provider, a tool runner, an MCP session pool).
pub type Secrets = Arc<dyn SecretSource>;

/// A handle to [`NoSecrets`].
pub fn none() -> Secrets {
    Arc::new(NoSecrets)
}
