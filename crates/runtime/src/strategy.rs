//! Strategies (`strategies/*.yaml`): everything an execution runs with, as data. Its identity,
//! `strategy_version`, is derived from all of it — prompt version × model × tool policy × limits
//! × success criteria — so two executions with the same version ran the same thing, and A/B
//! readouts group by it.
//!
//! ```yaml
//! name: support-short
//! prompt: { file: ../prompts/support-v1.md, version: v1 }   # relative to this file
//! model: { provider: scripted, name: scripted-small, script: ../models/support.yaml }
//! tools: [lookup_order, draft_reply, notify_team, issue_customer_refund]
//! max_steps: 6
//! budget: { max_cost_usd: 0.05, max_tokens: 50000 }
//! max_autonomous_tier: 2          # actions above it need approval
//! durability: before_effects      # or every_step
//! success:                        # any of these, evaluated on the log
//!   - { tool: issue_customer_refund, status: ok }
//!   - { answer_matches: "(?i)order A-\\d{4} is (shipped|delivered)" }
//! ```

use crate::error::RuntimeError;
use keel_core::payload::Budget;
use keel_core::secrets::Secrets;
use keel_models::ModelProvider;
use keel_models::anthropic::{Anthropic, AnthropicConfig};
use keel_models::http::RetryPolicy;
use keel_models::openai::{OpenAi, OpenAiConfig, ToolChoice};
use keel_models::scripted::ScriptedModel;
use regex::Regex;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrategyFile {
    name: String,
    prompt: PromptFile,
    model: ModelFile,
    tools: Vec<String>,
    max_steps: u32,
    #[serde(default)]
    budget: BudgetFile,
    #[serde(default = "default_tier")]
    max_autonomous_tier: u8,
    success: Vec<CriterionFile>,
    #[serde(default)]
    experiment_arm: Option<String>,
    #[serde(default)]
    durability: Durability,
    #[serde(default)]
    approval: Approval,
    /// The strategy `keel serve` and the API run when a request names none.
    #[serde(default)]
    default: bool,
    /// Retrieval and distillation (see `crate::recall`); off when absent.
    #[serde(default)]
    memory: crate::recall::MemoryConfig,
    /// Whether a request must name its data subject (see `crate::subject`).
    #[serde(default)]
    subject: crate::subject::SubjectRule,
}

/// How this strategy's gates and post-hoc reviews work.
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The queue its gates wait in.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Seconds after which an undecided gate breaches its SLA and escalates.
    #[serde(default)]
    pub deadline_s: Option<u64>,
    /// Seconds after which an undecided gate expires (verdict `expired`; the model is told).
    #[serde(default)]
    pub expire_after_s: Option<u64>,
    /// Share of tier-2 calls sampled for post-hoc review.
    #[serde(default = "default_review_rate")]
    pub review_rate: f64,
    /// Automatic demotion on a rejection spike.
    #[serde(default)]
    pub demotion: DemotionFile,
}

impl Default for Approval {
    fn default() -> Self {
        Self {
            queue: default_queue(),
            deadline_s: None,
            expire_after_s: None,
            review_rate: default_review_rate(),
            demotion: DemotionFile::default(),
        }
    }
}

fn default_queue() -> String {
    "default".into()
}

fn default_review_rate() -> f64 {
    0.1
}

/// Demotion thresholds: see [`keel_core::control::DemotionPolicy`].
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DemotionFile {
    /// Most recent decisions looked at.
    pub window: usize,
    /// Fewest decisions to judge on.
    pub min_sample: usize,
    /// Highest tolerated rejected share.
    pub max_rejection_rate: f64,
}

impl Default for DemotionFile {
    fn default() -> Self {
        Self {
            window: 20,
            min_sample: 5,
            max_rejection_rate: 0.5,
        }
    }
}

impl DemotionFile {
    /// As the core's policy.
    pub fn policy(&self) -> keel_core::control::DemotionPolicy {
        keel_core::control::DemotionPolicy {
            window: self.window,
            min_sample: self.min_sample,
            max_rejection_rate: self.max_rejection_rate,
        }
    }
}

/// When the loop waits for the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Each step's events are durable before the next step starts (one fsync per step).
    EveryStep,
    /// Durable only before a side effect (its `tool.called` intent), before a gate, and at the
    /// end; read-only steps ride along. A machine crash may lose a tail of read-only steps,
    /// which are re-run; never a side effect.
    #[default]
    BeforeEffects,
}

fn default_tier() -> u8 {
    2
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptFile {
    file: String,
    version: String,
}

#[derive(Deserialize, serde::Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    provider: String,
    name: String,
    #[serde(default)]
    script: Option<String>,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default = "default_max_tokens")]
    max_tokens: u32,
    /// `auto`, `required`, `none` or a tool's name (OpenAI-compatible providers only); left out
    /// of the version's hash when absent, so existing strategies keep their versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool_choice: Option<String>,
}

fn default_max_tokens() -> u32 {
    1024
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BudgetFile {
    #[serde(default)]
    max_cost_usd: Option<f64>,
    #[serde(default)]
    max_tokens: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CriterionFile {
    #[serde(default)]
    tool: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    answer_matches: Option<String>,
}

/// A declared success criterion; an execution succeeds if any holds when it answers.
#[derive(Clone, Debug)]
pub enum Criterion {
    /// A call of this tool ended with this status (`ok`, `rejected`, …).
    ToolStatus {
        /// The tool.
        tool: String,
        /// The status, as on `tool.result`.
        status: String,
    },
    /// The final answer matches this regex.
    AnswerMatches(Regex),
}

/// Which provider runs the model.
#[derive(Clone, Debug, PartialEq)]
pub enum ProviderKind {
    /// The offline scripted model, with its script.
    Scripted(PathBuf),
    /// An OpenAI-compatible server.
    OpenAi {
        /// Base URL including `/v1`.
        base_url: String,
        /// API key variable, if the server needs one.
        api_key_env: Option<String>,
        /// `tool_choice` until the model has called a tool.
        tool_choice: Option<ToolChoice>,
    },
    /// Anthropic.
    Anthropic {
        /// Base URL.
        base_url: String,
        /// API key variable.
        api_key_env: String,
    },
}

/// A validated strategy.
#[derive(Clone, Debug)]
pub struct Strategy {
    /// Short name (`support-short`).
    pub name: String,
    /// The derived identity: `name/prompt-version/model/policy-hash`.
    pub version: String,
    /// The prompt's text.
    pub prompt: String,
    /// The prompt's version.
    pub prompt_version: String,
    /// The model name (as priced in `prices.toml`).
    pub model: String,
    /// Its provider.
    pub provider: ProviderKind,
    /// Output token cap per reply.
    pub max_tokens: u32,
    /// Tools the model is offered.
    pub tools: Vec<String>,
    /// Step limit.
    pub max_steps: u32,
    /// Per-execution limits.
    pub budget: Budget,
    /// Highest consequence tier run without approval.
    pub max_autonomous_tier: u8,
    /// Success criteria (any of).
    pub success: Vec<Criterion>,
    /// Experiment arm, if this strategy is one.
    pub experiment_arm: Option<String>,
    /// The experiment assignment of the execution this strategy is about to start, if an
    /// experiment picked it (see [`keel_core::experiment`]; recorded on `exec.started`).
    pub assignment: Option<keel_core::experiment::Assignment>,
    /// When the loop waits for the disk.
    pub durability: Durability,
    /// Gates, SLAs, post-hoc review and demotion.
    pub approval: Approval,
    /// Run when a request names no strategy.
    pub default: bool,
    /// Memory retrieval and distillation.
    pub memory: crate::recall::MemoryConfig,
    /// Whether a request must name its data subject (`subject: required`).
    pub subject: crate::subject::SubjectRule,
    /// Where the provider's API key comes from (none until the wiring hands its source down).
    keys: KeySource,
}

/// The secret source a strategy's provider takes its API key from: the wiring's (the `keel`
/// binary's answers from the environment), never read here.
#[derive(Clone)]
struct KeySource(Secrets);

impl Default for KeySource {
    fn default() -> Self {
        Self(keel_core::secrets::none())
    }
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySource")
    }
}

impl Strategy {
    /// Parses a strategy file's text; paths in it are relative to `dir`.
    pub fn parse(text: &str, file: &str, dir: &Path) -> Result<Self, RuntimeError> {
        let err = |detail: String| RuntimeError::Strategy {
            file: file.to_owned(),
            detail,
        };
        let f: StrategyFile = serde_saphyr::from_str(text).map_err(|e| err(e.to_string()))?;
        let prompt_path = dir.join(&f.prompt.file);
        let prompt = std::fs::read_to_string(&prompt_path)
            .map_err(|e| err(format!("prompt.file: {}: {e}", prompt_path.display())))?;
        if f.max_steps == 0 {
            return Err(err("max_steps: must be at least 1".into()));
        }
        if f.max_autonomous_tier > 3 {
            return Err(err("max_autonomous_tier: must be 0..=3".into()));
        }
        let a = &f.approval;
        if !(0.0..=1.0).contains(&a.review_rate) {
            return Err(err(format!(
                "approval.review_rate: {} is not a share in 0..=1",
                a.review_rate
            )));
        }
        if !(0.0..=1.0).contains(&a.demotion.max_rejection_rate) || a.demotion.window == 0 {
            return Err(err(
                "approval.demotion: window must be at least 1 and max_rejection_rate in 0..=1"
                    .into(),
            ));
        }
        if let (Some(d), Some(x)) = (a.deadline_s, a.expire_after_s)
            && x < d
        {
            return Err(err(format!(
                "approval.expire_after_s: {x} comes before deadline_s {d}"
            )));
        }
        if f.tools.is_empty() {
            return Err(err("tools: offer at least one tool".into()));
        }
        if f.success.is_empty() {
            return Err(err(
                "success: declare at least one criterion; outcomes are evaluated, not guessed"
                    .into(),
            ));
        }
        let mut success = Vec::new();
        for (i, c) in f.success.iter().enumerate() {
            success.push(match (&c.tool, &c.answer_matches) {
                (Some(tool), None) => Criterion::ToolStatus {
                    tool: tool.clone(),
                    status: c.status.clone().unwrap_or_else(|| "ok".into()),
                },
                (None, Some(re)) => Criterion::AnswerMatches(
                    Regex::new(re)
                        .map_err(|e| err(format!("success[{i}].answer_matches: {e}")))?,
                ),
                _ => {
                    return Err(err(format!(
                        "success[{i}]: give either `tool` (with optional `status`) or `answer_matches`"
                    )));
                }
            });
        }
        let m = &f.model;
        if let Some(choice) = &m.tool_choice {
            if m.provider != "openai" {
                return Err(err(format!(
                    "model.tool_choice: only the openai provider takes it, not {:?}",
                    m.provider
                )));
            }
            if !["auto", "required", "none"].contains(&choice.as_str()) && !f.tools.contains(choice)
            {
                return Err(err(format!(
                    "model.tool_choice: {choice:?} is neither auto, required, none nor one of the strategy's tools ({})",
                    f.tools.join(", ")
                )));
            }
        }
        let provider = match m.provider.as_str() {
            "scripted" => {
                let script = m.script.as_ref().ok_or_else(|| {
                    err("model.script: the scripted provider needs a script".into())
                })?;
                ProviderKind::Scripted(dir.join(script))
            }
            "openai" => ProviderKind::OpenAi {
                base_url: m
                    .base_url
                    .clone()
                    .unwrap_or_else(|| "https://api.openai.com/v1".into()),
                api_key_env: m.api_key_env.clone(),
                tool_choice: m.tool_choice.as_deref().map(ToolChoice::parse),
            },
            "anthropic" => ProviderKind::Anthropic {
                base_url: m
                    .base_url
                    .clone()
                    .unwrap_or_else(|| "https://api.anthropic.com".into()),
                api_key_env: m
                    .api_key_env
                    .clone()
                    .unwrap_or_else(|| "ANTHROPIC_API_KEY".into()),
            },
            other => {
                return Err(err(format!(
                    "model.provider: {other:?} is not one of scripted, openai, anthropic"
                )));
            }
        };
        let budget = Budget {
            max_cost_micros: match f.budget.max_cost_usd {
                Some(usd) if usd.is_finite() && usd >= 0.0 => Some((usd * 1e6).round() as u64),
                Some(usd) => {
                    return Err(err(format!("budget.max_cost_usd: {usd} is not an amount")));
                }
                None => None,
            },
            max_steps: Some(f.max_steps),
            max_tokens: f.budget.max_tokens,
        };
        // Everything that changes behaviour goes into the version.
        let policy = serde_json::json!({
            "prompt": prompt,
            "model": m,
            "tools": f.tools,
            "max_steps": f.max_steps,
            "budget": [budget.max_cost_micros, budget.max_tokens],
            "tier": f.max_autonomous_tier,
            "durability": f.durability,
            "success": f.success.iter().map(|c| (&c.tool, &c.status, &c.answer_matches)).collect::<Vec<_>>(),
        });
        let mut policy = policy;
        f.memory.validate().map_err(err)?;
        if f.memory != crate::recall::MemoryConfig::default() {
            policy["memory"] = serde_json::json!(f.memory);
        }
        let hash = hex::encode(&Sha256::digest(policy.to_string().as_bytes())[..4]);
        Ok(Self {
            version: format!("{}/{}/{}/{hash}", f.name, f.prompt.version, m.name),
            name: f.name,
            prompt,
            prompt_version: f.prompt.version,
            model: m.name.clone(),
            provider,
            max_tokens: m.max_tokens,
            tools: f.tools,
            max_steps: f.max_steps,
            budget,
            max_autonomous_tier: f.max_autonomous_tier,
            success,
            experiment_arm: f.experiment_arm,
            assignment: None,
            durability: f.durability,
            approval: f.approval,
            default: f.default,
            memory: f.memory,
            subject: f.subject,
            keys: KeySource::default(),
        })
    }

    /// This strategy with its provider's API key taken from `secrets` (the wiring's source).
    pub fn with_secrets(mut self, secrets: Secrets) -> Self {
        self.keys = KeySource(secrets);
        self
    }

    /// Builds this strategy's model provider, its API key taken from the secret source the
    /// wiring handed down ([`Strategy::with_secrets`]; none: a provider that needs a key fails,
    /// naming the variable).
    pub fn provider(&self) -> Result<Arc<dyn ModelProvider>, RuntimeError> {
        let secrets = &*self.keys.0;
        Ok(match &self.provider {
            ProviderKind::Scripted(script) => Arc::new(ScriptedModel::load(script)?),
            ProviderKind::OpenAi {
                base_url,
                api_key_env,
                tool_choice,
            } => Arc::new(OpenAi::new(
                OpenAiConfig {
                    base_url: base_url.clone(),
                    api_key_env: api_key_env.clone(),
                    retry: RetryPolicy::default(),
                    tool_choice: tool_choice.clone(),
                },
                secrets,
            )?),
            ProviderKind::Anthropic {
                base_url,
                api_key_env,
            } => Arc::new(Anthropic::new(
                AnthropicConfig {
                    base_url: base_url.clone(),
                    api_key_env: api_key_env.clone(),
                    retry: RetryPolicy::default(),
                },
                secrets,
            )?),
        })
    }
}

/// Every strategy of a folder, by name and by version.
#[derive(Clone, Debug, Default)]
pub struct StrategySet {
    by_name: BTreeMap<String, Strategy>,
}

impl StrategySet {
    /// Loads `dir/*.yaml`; every problem of every file is reported, one a line.
    pub fn load_dir(dir: &Path) -> Result<Self, RuntimeError> {
        let entries = std::fs::read_dir(dir).map_err(|e| RuntimeError::Strategy {
            file: dir.display().to_string(),
            detail: e.to_string(),
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        paths.sort();
        let mut set = Self::default();
        let mut problems = Vec::new();
        for path in paths {
            let file = path.display().to_string();
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| RuntimeError::Strategy {
                    file: file.clone(),
                    detail: e.to_string(),
                })
                .and_then(|text| Strategy::parse(&text, &file, dir));
            match parsed {
                Ok(s) if set.by_name.contains_key(&s.name) => {
                    problems.push(format!(
                        "{file}: name: {:?} is used by another strategy",
                        s.name
                    ));
                }
                Ok(s) => {
                    set.by_name.insert(s.name.clone(), s);
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        if !problems.is_empty() {
            return Err(RuntimeError::Strategy {
                file: dir.display().to_string(),
                detail: format!("\n{}", problems.join("\n")),
            });
        }
        Ok(set)
    }

    /// A strategy by name, or by its full version (as recorded on `exec.started`).
    pub fn get(&self, name_or_version: &str) -> Option<&Strategy> {
        self.by_name
            .get(name_or_version)
            .or_else(|| self.by_name.values().find(|s| s.version == name_or_version))
    }

    /// The strategy marked `default: true`, else the first by name.
    pub fn default_strategy(&self) -> Option<&Strategy> {
        self.by_name
            .values()
            .find(|s| s.default)
            .or_else(|| self.by_name.values().next())
    }

    /// All strategies, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Strategy> {
        self.by_name.values()
    }

    /// Every strategy with its provider's API key taken from `secrets` (the wiring's source).
    pub fn with_secrets(self, secrets: &Secrets) -> Self {
        Self {
            by_name: self
                .by_name
                .into_iter()
                .map(|(name, s)| (name, s.with_secrets(secrets.clone())))
                .collect(),
        }
    }
}
