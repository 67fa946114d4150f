//! The runtime's errors. Failures of the model or a tool are not errors here: they end up as
//! events and outcomes. These are the conditions under which the loop cannot go on at all.

/// What stops the loop itself.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A strategy file is wrong.
    #[error("{file}: {detail}")]
    Strategy {
        /// The file.
        file: String,
        /// What and where.
        detail: String,
    },
    /// A strategy with a cost budget runs a model that has no price: no cost could be checked
    /// against the budget, so it does not start.
    #[error(
        "strategy {strategy} has a cost budget ({max_cost_micros} µUSD) but its model {model:?} has \
         no price in prices.toml, so no cost could be checked against the budget; add \
         [models.\"{model}\"] with input and output prices (USD per million tokens), or remove \
         the strategy's budget.max_cost_usd"
    )]
    Unpriced {
        /// The strategy's name.
        strategy: String,
        /// Its model.
        model: String,
        /// Its budget.
        max_cost_micros: u64,
    },
    /// No strategy by that name or version.
    #[error("no strategy {0:?} (see strategies/*.yaml)")]
    UnknownStrategy(String),
    /// No such execution.
    #[error("no execution {0}")]
    UnknownExecution(String),
    /// Another worker appended to this execution first: it owns the execution now.
    #[error("execution {0} is being run by another worker")]
    Contended(String),
    /// The execution's log is not legal (it should never happen; the message names the event).
    #[error(transparent)]
    Fold(#[from] keel_core::FoldError),
    /// The spine failed.
    #[error(transparent)]
    Spine(#[from] keel_spine::SpineError),
    /// The tool layer failed (not a tool: the layer).
    #[error(transparent)]
    Tools(#[from] keel_tools::ToolError),
    /// A model configuration is wrong.
    #[error(transparent)]
    Model(#[from] keel_models::ModelError),
    /// A worker task died (a bug: the loop returns errors, it does not panic).
    #[error("worker task failed: {0}")]
    Worker(String),
    /// The control stream could not be read or written.
    #[error("control stream: {0}")]
    Control(String),
    /// A gate decision that cannot be taken.
    #[error(transparent)]
    Gate(#[from] crate::gates::GateError),
    /// Governed memory failed (retrieval, distillation, the store, the embedder).
    #[error(transparent)]
    Memory(#[from] keel_memory::MemoryError),
    /// An experiment file, registration or assignment that cannot be taken (the message says
    /// what and where; a change to a registered experiment names its frozen fields).
    #[error("{0}")]
    Experiment(String),
    /// A request's data subject is malformed, or missing where the strategy requires one.
    #[error("subject: {0}")]
    Subject(String),
    /// A replay that cannot run (unknown or unfinished original, a tool it cannot answer).
    #[error("replay of {exec}: {detail}")]
    Replay {
        /// The execution replayed.
        exec: String,
        /// What is wrong.
        detail: String,
    },
}
