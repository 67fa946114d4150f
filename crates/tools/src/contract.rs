//! A tool contract as validated data: what the orchestrator enforces for one tool. Values of these
//! types only come out of [`crate::parse`], so inner code never re-checks a contract.
//!
//! The shape follows the seed's registry entry (name, schema both ways, side effect, consequence
//! tier, idempotency with key fields, budgets, failure policy, timeout, adapter).

use crate::schema::CompiledSchema;
use keel_core::Cost;
use std::collections::BTreeMap;
use std::time::Duration;

/// What calling the tool does to the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SideEffect {
    /// Reads only; safe to repeat.
    ReadOnly,
    /// Changes something that a compensating tool can undo.
    Reversible,
    /// Changes something that cannot be undone (money moved, mail sent).
    Irreversible,
}

impl SideEffect {
    /// The contract spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "read_only",
            Self::Reversible => "reversible",
            Self::Irreversible => "irreversible",
        }
    }
}

/// Whether calls carry an idempotency key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdempotencyMode {
    /// Every call has a key made from the key fields; the ledger guards it.
    Required,
    /// A key is made when every key field is present in the arguments.
    Optional,
    /// No key (read-only tools).
    None,
}

impl IdempotencyMode {
    /// The contract spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Optional => "optional",
            Self::None => "none",
        }
    }
}

/// One component of an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyField {
    /// The execution id (from the call's context, not from the model).
    ExecId,
    /// The tenant (from the call's context).
    Tenant,
    /// A top-level argument.
    Arg(String),
}

impl KeyField {
    /// The contract spelling.
    pub fn name(&self) -> &str {
        match self {
            Self::ExecId => "exec_id",
            Self::Tenant => "tenant",
            Self::Arg(a) => a,
        }
    }
}

/// Idempotency declaration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    /// Required, optional or none.
    pub mode: IdempotencyMode,
    /// The fields the key is made of, in order.
    pub key: Vec<KeyField>,
}

/// A rate: `n` calls per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Calls allowed per period (burst size too).
    pub calls: u32,
    /// The period.
    pub per: Duration,
}

/// Budgets attached to the tool.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Budgets {
    /// Rate per tenant, if limited.
    pub rate_per_tenant: Option<Rate>,
    /// Estimated cost per call (what `tool.called.est_cost` carries and the cost budget checks).
    pub cost_est: Cost,
}

/// A class of failure, as adapters report them and policies name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// The call did not finish in time (outcome unknown).
    Timeout,
    /// The tool said "slow down" (HTTP 429).
    RateLimited,
    /// The tool's server failed (HTTP 5xx).
    ServerError,
    /// The tool could not be reached (refused, reset, DNS).
    Connection,
    /// The tool refused the request as wrong (HTTP 4xx other than 429); retrying cannot help.
    ClientError,
    /// The tool ran and reported an error of its own (MCP `isError`, builtin business error).
    ToolError,
    /// The tool's reply was not what the protocol promised (not JSON, …).
    Protocol,
    /// A previous attempt was interrupted by a crash and its outcome is unknown.
    Interrupted,
    /// The server refused the credentials (HTTP 401/403, an OAuth failure); never retried, since
    /// the same credentials get the same answer.
    Auth,
}

impl ErrorClass {
    /// Every class.
    pub const ALL: [ErrorClass; 9] = [
        Self::Timeout,
        Self::RateLimited,
        Self::ServerError,
        Self::Connection,
        Self::ClientError,
        Self::ToolError,
        Self::Protocol,
        Self::Interrupted,
        Self::Auth,
    ];

    /// The contract / event spelling (`5xx` for server errors).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::RateLimited => "rate_limited",
            Self::ServerError => "5xx",
            Self::Connection => "connection",
            Self::ClientError => "4xx",
            Self::ToolError => "tool_error",
            Self::Protocol => "protocol",
            Self::Interrupted => "interrupted",
            Self::Auth => "auth",
        }
    }

    /// Parses the contract spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// True if the tool may have acted even though the call failed (so a blind repeat could
    /// duplicate a side effect).
    pub fn outcome_unknown(self) -> bool {
        matches!(self, Self::Timeout | Self::Interrupted)
    }
}

/// Exponential backoff with full jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Cap on any one delay.
    pub max: Duration,
    /// Growth factor per attempt.
    pub factor: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
            factor: 2,
        }
    }
}

/// What to do when retries are exhausted (or the failure is not retryable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExhaust {
    /// Hand the decision to a person: the runtime opens a gate.
    EscalateToGate,
    /// Fail the call; the model sees the error.
    Fail,
}

impl OnExhaust {
    /// The contract spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EscalateToGate => "escalate_to_gate",
            Self::Fail => "fail",
        }
    }
}

/// Failure policy as data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailurePolicy {
    /// Classes retried (same idempotency key each attempt).
    pub retryable: Vec<ErrorClass>,
    /// Delays between attempts.
    pub backoff: Backoff,
    /// Attempts in all, the first included (≥ 1).
    pub max_attempts: u32,
    /// Tool that undoes this one (reversible tools only), called with the same arguments.
    pub compensation: Option<String>,
    /// What happens when attempts run out.
    pub on_exhaust: OnExhaust,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        Self {
            retryable: Vec::new(),
            backoff: Backoff::default(),
            max_attempts: 1,
            compensation: None,
            on_exhaust: OnExhaust::Fail,
        }
    }
}

/// How an MCP server is reached.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum McpServer {
    /// A child process speaking stdio: program and arguments, extra environment.
    Stdio {
        /// Program then arguments.
        command: Vec<String>,
        /// Extra environment variables for the child.
        env: BTreeMap<String, String>,
    },
    /// A Streamable HTTP endpoint.
    Http {
        /// The endpoint, e.g. `http://127.0.0.1:3001/mcp`.
        url: String,
        /// Header name → name of the environment variable holding its value, sent on every
        /// request (secrets stay out of contracts, events, logs and errors).
        headers_from_env: BTreeMap<String, String>,
        /// OAuth 2.1, when the server is an OAuth-protected resource.
        oauth: Option<McpOAuth>,
    },
}

impl McpServer {
    /// A Streamable HTTP endpoint with no credentials.
    pub fn http(url: impl Into<String>) -> Self {
        Self::Http {
            url: url.into(),
            headers_from_env: BTreeMap::new(),
            oauth: None,
        }
    }
}

impl std::fmt::Display for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stdio { command, .. } => f.write_str(&command.join(" ")),
            Self::Http { url, .. } => f.write_str(url),
        }
    }
}

/// How Keel obtains an OAuth 2.1 access token for an MCP server (the specification's
/// authorization section, client side). Secrets are named by environment variable, never held in
/// the contract.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct McpOAuth {
    /// The grant.
    pub grant: OAuthGrant,
    /// Environment variable holding a pre-registered client id; without it the client registers
    /// itself (a client metadata document URL if given, else dynamic client registration).
    pub client_id_env: Option<String>,
    /// Environment variable holding the client secret of a pre-registered confidential client.
    pub client_secret_env: Option<String>,
    /// A client ID metadata document URL (used as the client id when the server supports it).
    pub client_metadata_url: Option<String>,
    /// Scopes to ask for; empty lets the server's challenge or metadata choose.
    pub scopes: Vec<String>,
    /// Client credentials only: authenticate with an assertion signed by this private key
    /// (`private_key_jwt`) instead of a client secret.
    pub private_key: Option<PrivateKeySource>,
    /// Enterprise-managed grant only: the identity provider the person's ID token is from.
    pub idp: Option<Box<McpIdp>>,
}

/// The enterprise identity provider of an enterprise-managed grant (SEP-990): Keel exchanges the
/// person's ID token there for an identity assertion grant (ID-JAG) for the MCP server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct McpIdp {
    /// The provider's issuer identifier.
    pub issuer: String,
    /// Its token endpoint (where the token exchange is made).
    pub token_endpoint: String,
    /// Environment variable holding Keel's client id at the provider.
    pub client_id_env: String,
    /// Environment variable holding that client's secret (a public client without it).
    pub client_secret_env: Option<String>,
    /// Environment variable holding the person's ID token from the provider.
    pub id_token_env: String,
}

/// Where a `private_key_jwt` signing key (a PEM) is read from when a session opens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PrivateKeySource {
    /// An environment variable holding the PEM.
    Env(String),
    /// A file holding the PEM.
    File(String),
}

/// An OAuth grant Keel can run without a browser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OAuthGrant {
    /// Authorization code with PKCE. Keel follows the authorization endpoint itself and takes
    /// the code from its redirect, so it works only where the server grants without a person's
    /// interaction (consent given beforehand); otherwise the call fails with class `auth`.
    AuthorizationCode,
    /// Client credentials (machine to machine, headless).
    ClientCredentials,
    /// Enterprise-managed authorization (SEP-990): the person's ID token from the enterprise
    /// identity provider, exchanged there for an ID-JAG, redeemed at the MCP server's
    /// authorization server with the JWT bearer grant. Headless.
    EnterpriseManaged,
}

impl OAuthGrant {
    /// The contract spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::ClientCredentials => "client_credentials",
            Self::EnterpriseManaged => "enterprise_managed",
        }
    }
}

/// What Keel answers when an MCP server asks for user input (elicitation) during a call. No
/// person sits behind a tool call, so the answer is declared on the contract.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum ElicitationPolicy {
    /// Decline every request (the default).
    #[default]
    Decline,
    /// Accept with the requested schema's default values (fields without one are left out).
    AcceptDefaults,
    /// Ask a person: open an approval gate during the call and answer with the approver's
    /// input (`accept`), `decline` on a rejection, `cancel` when the gate expires.
    Gate(Box<ElicitationGate>),
}

/// Where an elicitation gate waits and for how long (the strategy's `approval` keys).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ElicitationGate {
    /// The approval queue.
    pub queue: String,
    /// Seconds after which the undecided gate breaches its SLA (escalates; stays open).
    pub deadline_s: Option<u64>,
    /// Seconds after which the undecided gate expires and the server is answered `cancel`.
    pub expire_after_s: u64,
}

impl ElicitationGate {
    /// How long a person has by default: an hour. The MCP session stays open that long, so the
    /// wait is bounded even when the contract names no limit.
    pub const DEFAULT_EXPIRE_AFTER_S: u64 = 3600;
}

impl Default for ElicitationGate {
    fn default() -> Self {
        Self {
            queue: "default".into(),
            deadline_s: None,
            expire_after_s: Self::DEFAULT_EXPIRE_AFTER_S,
        }
    }
}

impl ElicitationPolicy {
    /// The contract spelling of the policy.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Decline => "decline",
            Self::AcceptDefaults => "accept_defaults",
            Self::Gate(_) => "gate",
        }
    }
}

/// Which adapter runs the tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdapterSpec {
    /// POST the arguments as JSON to `url`.
    Http {
        /// Endpoint.
        url: String,
        /// Header name → name of the environment variable holding its value (secrets stay
        /// out of contracts, events, logs and errors).
        headers_from_env: BTreeMap<String, String>,
    },
    /// Call a tool on an MCP server.
    Mcp {
        /// The server.
        server: McpServer,
        /// The tool's name on the server (defaults to the contract name).
        tool: String,
        /// How the server's elicitation requests are answered.
        elicitation: ElicitationPolicy,
    },
    /// A Rust function registered by name.
    Builtin {
        /// Registered function name.
        function: String,
    },
}

impl AdapterSpec {
    /// `http`, `mcp` or `builtin`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http",
            Self::Mcp { .. } => "mcp",
            Self::Builtin { .. } => "builtin",
        }
    }
}

/// One tool's contract, validated.
#[derive(Clone, Debug)]
pub struct Contract {
    /// Unique name (what the model calls).
    pub name: String,
    /// What the tool does (shown to the model).
    pub description: String,
    /// Input schema (JSON Schema 2020-12), compiled.
    pub input: CompiledSchema,
    /// Output schema, compiled.
    pub output: CompiledSchema,
    /// Side effect class.
    pub side_effect: SideEffect,
    /// Consequence tier 0–3 (3 always passes a gate).
    pub consequence_tier: u8,
    /// Idempotency declaration.
    pub idempotency: Idempotency,
    /// Budgets.
    pub budgets: Budgets,
    /// Failure policy.
    pub failure_policy: FailurePolicy,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// The adapter.
    pub adapter: AdapterSpec,
    /// The file the contract came from.
    pub source: std::path::PathBuf,
}
