//! The scripted model: a deterministic, offline provider driven by a YAML script of rules. Given
//! the goal (the first user message) and the last tool result in the conversation, the first rule
//! whose conditions hold decides the reply: a tool call, an answer, or (for tests of the loop's
//! recovery) a malformed reply. It reads only the conversation it is sent, exactly like a hosted
//! model, so it stands behind the same trait.
//!
//! ```yaml
//! model: scripted-support          # informational; replies echo the requested model name
//! input_tokens_per_char: 0.25      # input tokens ≈ prompt characters × this
//! output_tokens: 40                # default output tokens per reply
//! rules:
//!   - name: refund-lookup
//!     when: { goal: '(?i)refund.*?(?P<order>\d{4})', last_tool: none }   # also: prompt: <regex>
//!     then:
//!       text: "Look up order {order}, then refund it."
//!       call: { tool: lookup_order, args: { order_id: "{order}" } }
//!   - name: refund-issue
//!     when: { goal: '(?i)refund.*?(?P<order>\d{4})', last_tool: lookup_order, last_status: ok }
//!     then:
//!       call: { tool: issue_customer_refund, args: { order_id: "{order}", amount_cents: "{result./total_cents}" } }
//!   - name: fallback
//!     then: { text: "I could not understand the request." }
//! ```
//!
//! `when.memory: <regex>` matches the memory the runtime showed the model (every system message
//! after the first); its named captures become placeholders too.
//!
//! `then.json: <any YAML value>` replies with that value, its strings' placeholders filled, as
//! JSON text (serialised, so whatever a placeholder holds — quotes, backslashes, newlines — stays
//! valid JSON); use it, not a hand-written JSON `text`, for structured replies.
//!
//! `{{` and `}}` are literal braces. Placeholders: `{goal}`, a named capture of the `goal` regex (`{order}`), and `{result/<json
//! pointer>}` into the last tool result (parsed as JSON). A string that is exactly one placeholder
//! takes the placeholder's JSON type (so `"{result./total_cents}"` stays a number).

use crate::error::ModelError;
use crate::provider::{
    ChatRequest, ChatResponse, FinishReason, Message, ModelProvider, ToolCall, Usage,
    check_tool_names,
};
use async_trait::async_trait;
use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

const NAME: &str = "scripted";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptFile {
    #[serde(default)]
    model: Option<String>,
    #[serde(default = "default_tokens_per_char")]
    input_tokens_per_char: f64,
    #[serde(default = "default_output_tokens")]
    output_tokens: u64,
    rules: Vec<RuleFile>,
}

fn default_tokens_per_char() -> f64 {
    0.25
}

fn default_output_tokens() -> u64 {
    40
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    when: WhenFile,
    then: Then,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WhenFile {
    /// Regex the goal must match; its named captures become placeholders.
    #[serde(default)]
    goal: Option<String>,
    /// Regex the system prompt must match (so prompt versions can behave differently).
    #[serde(default)]
    prompt: Option<String>,
    /// Tool of the last result, or `none` for "no tool has answered yet".
    #[serde(default)]
    last_tool: Option<String>,
    /// `ok` or `error`: how the last tool call ended.
    #[serde(default)]
    last_status: Option<LastStatus>,
    /// Regex the memory shown to the model (system messages after the prompt) must match.
    #[serde(default)]
    memory: Option<String>,
    /// Tools that must have been called already.
    #[serde(default)]
    called: Vec<String>,
    /// Tools that must not have been called yet.
    #[serde(default)]
    not_called: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LastStatus {
    Ok,
    Error,
}

/// What a rule replies.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Then {
    /// Text: the plan when a call follows, the answer otherwise.
    #[serde(default)]
    text: Option<String>,
    /// A tool call.
    #[serde(default)]
    call: Option<CallTemplate>,
    /// Output tokens of this reply (overrides the script default).
    #[serde(default)]
    output_tokens: Option<u64>,
    /// Reply malformed, with this detail (exercises the loop's recovery).
    #[serde(default)]
    malformed: Option<String>,
    /// Text: this value, placeholders filled inside its strings, serialised as JSON.
    #[serde(default)]
    json: Option<Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallTemplate {
    tool: String,
    #[serde(default)]
    args: Value,
}

struct Rule {
    name: String,
    goal: Option<Regex>,
    prompt: Option<Regex>,
    memory: Option<Regex>,
    last_tool: Option<Option<String>>,
    last_status: Option<LastStatus>,
    called: Vec<String>,
    not_called: Vec<String>,
    then: Then,
}

/// A deterministic model driven by rules.
pub struct ScriptedModel {
    rules: Vec<Rule>,
    input_tokens_per_char: f64,
    output_tokens: u64,
}

impl ScriptedModel {
    /// Parses a script; `file` names it in errors, which also name the rule and field.
    pub fn parse(text: &str, file: &str) -> Result<Self, ModelError> {
        let err = |detail: String| ModelError::Config {
            file: file.to_owned(),
            detail,
        };
        let script: ScriptFile = serde_saphyr::from_str(text).map_err(|e| err(e.to_string()))?;
        let _ = script.model;
        if script.rules.is_empty() {
            return Err(err("rules: a script needs at least one rule".into()));
        }
        if !(script.input_tokens_per_char.is_finite() && script.input_tokens_per_char >= 0.0) {
            return Err(err(
                "input_tokens_per_char: must be a non-negative number".into()
            ));
        }
        let mut rules = Vec::with_capacity(script.rules.len());
        for (i, r) in script.rules.into_iter().enumerate() {
            let at = |field: &str| {
                format!(
                    "rules[{i}]{}.{field}",
                    r.name
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                )
            };
            let goal = match &r.when.goal {
                Some(g) => Some(
                    Regex::new(g)
                        .map_err(|e| err(format!("{}: invalid regex: {e}", at("when.goal"))))?,
                ),
                None => None,
            };
            let prompt = match &r.when.prompt {
                Some(p) => Some(
                    Regex::new(p)
                        .map_err(|e| err(format!("{}: invalid regex: {e}", at("when.prompt"))))?,
                ),
                None => None,
            };
            let memory = match &r.when.memory {
                Some(p) => Some(
                    Regex::new(p)
                        .map_err(|e| err(format!("{}: invalid regex: {e}", at("when.memory"))))?,
                ),
                None => None,
            };
            if r.then.text.is_none()
                && r.then.json.is_none()
                && r.then.call.is_none()
                && r.then.malformed.is_none()
            {
                return Err(err(format!(
                    "{}: a rule must reply with text, json, a call, or malformed",
                    at("then")
                )));
            }
            if r.then.text.is_some() && r.then.json.is_some() {
                return Err(err(format!(
                    "{}: text and json are both the reply's text; give one",
                    at("then")
                )));
            }
            let last_tool = r.when.last_tool.clone().map(|t| (t != "none").then_some(t));
            rules.push(Rule {
                name: r.name.clone().unwrap_or_else(|| format!("rules[{i}]")),
                goal,
                prompt,
                memory,
                last_tool,
                last_status: r.when.last_status,
                called: r.when.called,
                not_called: r.when.not_called,
                then: r.then,
            });
        }
        Ok(Self {
            rules,
            input_tokens_per_char: script.input_tokens_per_char,
            output_tokens: script.output_tokens,
        })
    }

    /// Reads and parses a script file.
    pub fn load(path: &std::path::Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Config {
            file: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }
}

/// What the script can see of a conversation.
struct Seen<'a> {
    goal: &'a str,
    prompt: &'a str,
    memory: String,
    last: Option<(String, bool, Value)>,
    called: BTreeSet<&'a str>,
    turns: usize,
    chars: usize,
}

fn look(req: &ChatRequest) -> Seen<'_> {
    let mut seen = Seen {
        goal: "",
        prompt: "",
        memory: String::new(),
        last: None,
        called: BTreeSet::new(),
        turns: 0,
        chars: 0,
    };
    let mut names: HashMap<&str, &str> = HashMap::new();
    for m in &req.messages {
        match m {
            Message::System { content } => {
                if seen.prompt.is_empty() {
                    seen.prompt = content;
                } else {
                    seen.memory.push_str(content);
                    seen.memory.push('\n');
                }
                seen.chars += content.len();
            }
            Message::User { content } => {
                if seen.goal.is_empty() {
                    seen.goal = content;
                }
                seen.chars += content.len();
            }
            Message::Assistant {
                content,
                tool_calls,
            } => {
                seen.turns += 1;
                seen.chars += content.as_ref().map_or(0, String::len);
                for c in tool_calls {
                    names.insert(&c.id, &c.name);
                    seen.called.insert(&c.name);
                    seen.chars += c.name.len() + c.arguments.to_string().len();
                }
            }
            Message::Tool {
                call_id,
                content,
                is_error,
            } => {
                seen.chars += content.len();
                let tool = names
                    .get(call_id.as_str())
                    .copied()
                    .unwrap_or_default()
                    .to_owned();
                let value = serde_json::from_str(content)
                    .unwrap_or_else(|_| Value::String(content.clone()));
                seen.last = Some((tool, *is_error, value));
            }
        }
    }
    seen.chars += req
        .tools
        .iter()
        .map(|t| t.name.len() + t.description.len() + t.input_schema.to_string().len())
        .sum::<usize>();
    seen
}

impl Rule {
    fn matches(&self, seen: &Seen<'_>) -> Option<HashMap<String, Value>> {
        let mut vars = HashMap::new();
        vars.insert("goal".to_owned(), Value::String(seen.goal.to_owned()));
        if let Some(re) = &self.goal {
            let caps = re.captures(seen.goal)?;
            for name in re.capture_names().flatten() {
                if let Some(m) = caps.name(name) {
                    vars.insert(name.to_owned(), Value::String(m.as_str().to_owned()));
                }
            }
        }
        if let Some(re) = &self.prompt
            && !re.is_match(seen.prompt)
        {
            return None;
        }
        if let Some(re) = &self.memory {
            let caps = re.captures(&seen.memory)?;
            for name in re.capture_names().flatten() {
                if let Some(m) = caps.name(name) {
                    vars.insert(name.to_owned(), Value::String(m.as_str().to_owned()));
                }
            }
        }
        match (&self.last_tool, &seen.last) {
            (Some(None), Some(_)) => return None,
            (Some(Some(want)), Some((tool, _, _))) if want != tool => return None,
            (Some(Some(_)), None) => return None,
            _ => {}
        }
        if let Some(status) = self.last_status {
            let is_error = seen.last.as_ref().map(|(_, e, _)| *e)?;
            if (status == LastStatus::Error) != is_error {
                return None;
            }
        }
        if !self.called.iter().all(|t| seen.called.contains(t.as_str()))
            || self
                .not_called
                .iter()
                .any(|t| seen.called.contains(t.as_str()))
        {
            return None;
        }
        Some(vars)
    }
}

fn render(
    template: &Value,
    vars: &HashMap<String, Value>,
    last: Option<&Value>,
) -> Result<Value, String> {
    Ok(match template {
        Value::String(s) => render_str(s, vars, last)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render(v, vars, last))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                out.insert(k.clone(), render(v, vars, last)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

fn lookup(
    name: &str,
    vars: &HashMap<String, Value>,
    last: Option<&Value>,
) -> Result<Value, String> {
    if let Some(pointer) = name.strip_prefix("result.") {
        let last = last.ok_or_else(|| format!("{{{name}}}: there is no tool result yet"))?;
        return last
            .pointer(pointer)
            .cloned()
            .ok_or_else(|| format!("{{{name}}}: not in the last tool result"));
    }
    vars.get(name)
        .cloned()
        .ok_or_else(|| format!("{{{name}}}: no such placeholder"))
}

fn render_str(
    s: &str,
    vars: &HashMap<String, Value>,
    last: Option<&Value>,
) -> Result<Value, String> {
    // A string that is exactly one placeholder keeps the placeholder's JSON type.
    if let Some(inner) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}'))
        && !inner.contains(['{', '}'])
    {
        return lookup(inner, vars, last);
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some((before, after)) = rest.split_once('{') {
        // `{{` and `}}` are literal braces (for JSON replies).
        out.push_str(&before.replace("}}", "}"));
        if let Some(after) = after.strip_prefix('{') {
            out.push('{');
            rest = after;
            continue;
        }
        let Some((name, after)) = after.split_once('}') else {
            out.push('{');
            out.push_str(after);
            return Ok(Value::String(out));
        };
        match lookup(name, vars, last)? {
            Value::String(v) => out.push_str(&v),
            v => out.push_str(&v.to_string()),
        }
        rest = after;
    }
    out.push_str(&rest.replace("}}", "}"));
    Ok(Value::String(out))
}

#[async_trait]
impl ModelProvider for ScriptedModel {
    fn name(&self) -> &str {
        NAME
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let started = Instant::now();
        let seen = look(req);
        let malformed = |rule: &str, detail: String, raw: String| ModelError::Malformed {
            provider: NAME.into(),
            detail: format!("rule {rule}: {detail}"),
            raw,
            usage: Usage::default(),
        };
        let (rule, vars) = self
            .rules
            .iter()
            .find_map(|r| r.matches(&seen).map(|v| (r, v)))
            .ok_or_else(|| {
                malformed(
                    "(none)",
                    "no rule matches this conversation".into(),
                    String::new(),
                )
            })?;
        let last = seen.last.as_ref().map(|(_, _, v)| v);
        if let Some(detail) = &rule.then.malformed {
            return Err(malformed(
                &rule.name,
                detail.clone(),
                json!({"rule": rule.name, "malformed": detail}).to_string(),
            ));
        }
        let text = match &rule.then.text {
            Some(t) => match render_str(t, &vars, last)
                .map_err(|e| malformed(&rule.name, e, String::new()))?
            {
                Value::String(s) => Some(s),
                v => Some(v.to_string()),
            },
            None => match &rule.then.json {
                Some(template) => Some(
                    render(template, &vars, last)
                        .map_err(|e| malformed(&rule.name, e, String::new()))?
                        .to_string(),
                ),
                None => None,
            },
        };
        let mut tool_calls = Vec::new();
        if let Some(call) = &rule.then.call {
            let arguments = render(&call.args, &vars, last)
                .map_err(|e| malformed(&rule.name, e, String::new()))?;
            tool_calls.push(ToolCall {
                id: format!("call_{}", seen.turns + 1),
                name: call.tool.clone(),
                arguments: if arguments.is_null() {
                    json!({})
                } else {
                    arguments
                },
            });
        }
        let raw = json!({"rule": rule.name, "text": text, "tool_calls": tool_calls}).to_string();
        check_tool_names(NAME, req, &tool_calls, &raw)?;
        Ok(ChatResponse {
            model: req.model.clone(),
            finish: if tool_calls.is_empty() {
                FinishReason::Stop
            } else {
                FinishReason::ToolCalls
            },
            text,
            tool_calls,
            usage: Usage {
                input: (seen.chars as f64 * self.input_tokens_per_char).ceil() as u64,
                output: rule.then.output_tokens.unwrap_or(self.output_tokens),
                cached_input: 0,
            },
            latency: started.elapsed(),
            raw,
        })
    }
}
