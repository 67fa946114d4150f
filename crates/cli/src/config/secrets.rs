//! The process environment as the libraries' secret source: the one place a secret the
//! configuration, a strategy or a tool contract names by its variable is read. Values go
//! straight to the library that asked; they are never printed here.

use keel_core::secrets::{SecretSource, Secrets};
use std::sync::Arc;

/// Answers a secret by the environment variable of its name.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl SecretSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// The handle the wiring hands down (to the runtime's backends, the tool runner, a provider).
pub fn process_env() -> Secrets {
    Arc::new(ProcessEnv)
}
