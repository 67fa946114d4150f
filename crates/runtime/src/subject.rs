//! Who an execution is about. A request may name its data subject (the customer it serves);
//! the execution is then linked to the subject on the spine before its first event, so its
//! personal fields are sealed under the subject's key (erasable by crypto-shredding), subject
//! access and erasure reach it, its episodic memory is retrieved for that subject only, and its
//! distilled facts are filed under the subject. A strategy can require a subject
//! (`subject: required`), so no execution of it starts about no one.

use crate::agent::Agent;
use crate::error::RuntimeError;
use crate::strategy::Strategy;
use keel_core::ExecId;
use keel_spine::clock;
use serde::{Deserialize, Serialize};

/// Longest subject accepted, in characters.
pub const MAX_SUBJECT_CHARS: usize = 200;

/// A strategy's `subject:` rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectRule {
    /// A request may name a subject (the default).
    #[default]
    Optional,
    /// A request that names no subject is refused before anything is stored.
    Required,
}

/// Checks the subject a request names for `strategy`: well-formed if given, and given if the
/// strategy requires one. The error says what is wrong, for the `subject` field or flag.
pub fn check<'a>(strategy: &Strategy, subject: Option<&'a str>) -> Result<Option<&'a str>, String> {
    match subject {
        Some(s) => {
            if s.trim().is_empty() {
                return Err("must not be empty".into());
            }
            if s.chars().count() > MAX_SUBJECT_CHARS {
                return Err(format!("must be at most {MAX_SUBJECT_CHARS} characters"));
            }
            if s.chars().any(char::is_control) {
                return Err("must not contain control characters".into());
            }
            Ok(Some(s))
        }
        None if strategy.subject == SubjectRule::Required => Err(format!(
            "strategy {} requires a subject: name the data subject the execution is about",
            strategy.name
        )),
        None => Ok(None),
    }
}

impl Agent {
    /// Starts an execution of `strategy` for `tenant`, about `subject` if one is named (see the
    /// module docs); refuses, storing nothing, a subject that is malformed or missing where the
    /// strategy requires one ([`RuntimeError::Subject`]).
    pub async fn start_about(
        &self,
        strategy: &Strategy,
        tenant: &str,
        subject: Option<&str>,
        goal: &str,
    ) -> Result<ExecId, RuntimeError> {
        self.start_about_as(clock::new_exec_id(), strategy, tenant, subject, goal)
            .await
    }

    /// [`Agent::start_about`] under a chosen id. As with [`Agent::start_as`], a second start of
    /// the same id is a spine conflict and stores nothing; linking the same subject again is a
    /// no-op, another subject is refused.
    pub async fn start_about_as(
        &self,
        exec_id: ExecId,
        strategy: &Strategy,
        tenant: &str,
        subject: Option<&str>,
        goal: &str,
    ) -> Result<ExecId, RuntimeError> {
        let subject = check(strategy, subject).map_err(RuntimeError::Subject)?;
        // Priced before the link, so a refused start stores nothing.
        crate::estimate::check_priced(&self.prices, strategy)?;
        if let Some(subject) = subject {
            self.log.link_subject(exec_id, tenant, subject).await?;
        }
        self.append_start(exec_id, strategy, tenant, goal).await
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_SUBJECT_CHARS, SubjectRule, check};
    use crate::strategy::Strategy;

    fn strategy(rule: &str) -> Strategy {
        let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let text = format!(
            "name: s\nprompt: {{ file: {repo}/prompts/support-v1.md, version: v1 }}\n\
             model: {{ provider: scripted, name: scripted-small, script: {repo}/models/support.yaml }}\n\
             tools: [lookup_order]\nmax_steps: 2\nsuccess: [ {{ answer_matches: x }} ]\n{rule}"
        );
        match Strategy::parse(&text, "s.yaml", std::path::Path::new(repo)) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_subject_is_checked_and_can_be_required() {
        let optional = strategy("");
        assert_eq!(optional.subject, SubjectRule::Optional);
        assert_eq!(check(&optional, None), Ok(None));
        assert_eq!(check(&optional, Some("cust-42")), Ok(Some("cust-42")));
        assert_eq!(
            check(&optional, Some("  ")).err().as_deref(),
            Some("must not be empty")
        );
        assert!(check(&optional, Some("a\nb")).is_err());
        let long = "é".repeat(MAX_SUBJECT_CHARS + 1);
        assert!(check(&optional, Some(&long)).is_err());
        let longest = "é".repeat(MAX_SUBJECT_CHARS);
        assert!(
            check(&optional, Some(&longest)).is_ok(),
            "counted in characters"
        );
        let required = strategy("subject: required\n");
        assert_eq!(
            check(&required, None).err().as_deref(),
            Some("strategy s requires a subject: name the data subject the execution is about")
        );
        assert!(
            Strategy::parse("subject: sometimes", "x.yaml", std::path::Path::new(".")).is_err()
        );
    }
}
