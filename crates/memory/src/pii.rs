//! The PII screen applied to every fact before it is written: e-mail addresses, phone numbers,
//! card numbers (Luhn-checked), IBANs (mod-97-checked), national-ID-like numbers (US SSN, UK
//! NINO) and secrets (API keys, tokens, private keys). Per the policy a kind is redacted (the
//! match becomes `[kind]`) or rejects the fact; the result says what was done, never the values.
//!
//! Checksums and shape rules keep near-misses out: an order number, a date, a 16-digit tracking
//! number that fails Luhn, an IBAN-shaped string that fails mod 97, "the API key rotates".

use crate::fact::PiiAction;
use crate::policy::{MemoryPolicy, PiiRule};
use regex::Regex;
use std::sync::OnceLock;

/// The result of screening one text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Screened {
    /// The text with redacted kinds replaced.
    pub text: String,
    /// What was found and done, per kind.
    pub actions: Vec<PiiAction>,
}

impl Screened {
    /// Kinds whose rule is reject, comma separated; `None` if the fact may be stored.
    pub fn rejected(&self) -> Option<String> {
        let kinds: Vec<&str> = self
            .actions
            .iter()
            .filter(|a| a.action == "rejected")
            .map(|a| a.kind.as_str())
            .collect();
        (!kinds.is_empty()).then(|| kinds.join(", "))
    }
}

struct Detector {
    kind: &'static str,
    re: Regex,
    check: fn(&str) -> bool,
}

fn always(_: &str) -> bool {
    true
}

fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

/// Luhn checksum over the digits of `s` (13–19 digits).
pub fn luhn(s: &str) -> bool {
    let d = digits(s);
    if !(13..=19).contains(&d.len()) {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// IBAN mod-97 check (ISO 13616) on `s` with spaces removed.
pub fn iban_valid(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let v = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'A'..='Z' => c as u32 - 'A' as u32 + 10,
            _ => return false,
        };
        let width = if v >= 10 { 100 } else { 10 };
        rem = (rem * width + v) % 97;
    }
    rem == 1
}

fn phone_ok(s: &str) -> bool {
    let n = digits(s).len();
    if !(9..=15).contains(&n) {
        return false;
    }
    // Dates and times are not phone numbers.
    static DATE: OnceLock<Option<Regex>> = OnceLock::new();
    let date = DATE.get_or_init(|| Regex::new(r"^\d{4}[-/.]\d{2}[-/.]\d{2}").ok());
    !date.as_ref().is_some_and(|d| d.is_match(s.trim()))
}

fn ssn_ok(s: &str) -> bool {
    let d = digits(s);
    let area = d[..3].iter().fold(0, |a, x| a * 10 + x);
    let group = d[3..5].iter().fold(0, |a, x| a * 10 + x);
    let serial = d[5..].iter().fold(0, |a, x| a * 10 + x);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// Kind, regex, and the check a match must also pass.
type Spec = (&'static str, &'static str, fn(&str) -> bool);

fn detectors() -> &'static [Detector] {
    static D: OnceLock<Vec<Detector>> = OnceLock::new();
    D.get_or_init(|| {
        let specs: [Spec; 10] = [
            ("secret", r"-----BEGIN [A-Z ]*PRIVATE KEY-----", always),
            (
                "secret",
                r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35})\b",
                always,
            ),
            (
                "secret",
                r#"(?i)\b(?:api[_-]?key|secret|password|passwd|access[_-]?token|bearer)\b\s*(?:[:=]|is)\s*["']?[A-Za-z0-9_\-./+]{12,}"#,
                |m| m.chars().any(|c| c.is_ascii_digit()),
            ),
            (
                "iban",
                r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
                iban_valid,
            ),
            ("card", r"\b(?:\d[ -]?){12,18}\d\b", luhn),
            ("national_id", r"\b\d{3}-\d{2}-\d{4}\b", ssn_ok),
            (
                "national_id",
                r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b",
                always,
            ),
            (
                "email",
                r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
                always,
            ),
            (
                "phone",
                r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}\b",
                phone_ok,
            ),
            (
                "phone",
                r"(?:\(\d{3}\) ?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b|\b0\d{2,4}[ .-]?\d{3,4}[ .-]?\d{3,4}\b",
                phone_ok,
            ),
        ];
        specs
            .into_iter()
            .filter_map(|(kind, re, check)| {
                Regex::new(re).ok().map(|re| Detector { kind, re, check })
            })
            .collect()
    })
}

/// Screens `text` under `policy`.
pub fn screen(text: &str, policy: &MemoryPolicy) -> Screened {
    let mut out = text.to_owned();
    let mut actions: Vec<PiiAction> = Vec::new();
    for d in detectors() {
        let mut count = 0;
        let replaced =
            d.re.replace_all(&out, |caps: &regex::Captures<'_>| {
                let m = caps.get(0).map_or("", |m| m.as_str());
                if (d.check)(m) {
                    count += 1;
                    format!("[{}]", d.kind)
                } else {
                    m.to_owned()
                }
            })
            .into_owned();
        if count == 0 {
            continue;
        }
        out = replaced;
        let action = match policy.pii_rule(d.kind) {
            PiiRule::Redact => "redacted",
            PiiRule::Reject => "rejected",
        };
        match actions.iter_mut().find(|a| a.kind == d.kind) {
            Some(a) => a.count += count,
            None => actions.push(PiiAction {
                kind: d.kind.to_owned(),
                action: action.to_owned(),
                count,
            }),
        }
    }
    Screened { text: out, actions }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<String> {
        screen(text, &MemoryPolicy::default())
            .actions
            .into_iter()
            .map(|a| a.kind)
            .collect()
    }

    #[test]
    fn realistic_positives_are_found() {
        let cases = [
            ("Contact jane.doe+billing@example.co.uk about it", "email"),
            (
                "Customer asked us to call +44 20 7946 0958 after 5pm",
                "phone",
            ),
            ("call her back on (415) 555-0132", "phone"),
            ("her mobile is 07700 900123", "phone"),
            ("paid with 4111 1111 1111 1111 last time", "card"),
            ("card 5500-0000-0000-0004 on file", "card"),
            ("refund to GB82 WEST 1234 5698 7654 32 please", "iban"),
            ("IBAN DE89370400440532013000", "iban"),
            ("SSN 123-45-6789 was given", "national_id"),
            ("NI number AB 12 34 56 C", "national_id"),
            ("use key sk-proj-AbCdEf0123456789ghIJklMNop", "secret"),
            ("aws AKIAIOSFODNN7EXAMPLE in the config", "secret"),
            ("password: hunter2hunter2x9", "secret"),
            ("-----BEGIN RSA PRIVATE KEY----- MIIE", "secret"),
        ];
        for (text, want) in cases {
            let got = kinds(text);
            assert!(
                got.iter().any(|k| k == want),
                "{text:?}: expected {want}, got {got:?}"
            );
        }
    }

    #[test]
    fn near_misses_are_left_alone() {
        let cases = [
            "Tenant prefers CSV exports",
            "Order A-1001 shipped on 2026-11-25",
            "write to support at example dot com",
            "mention @janedoe on the forum",
            "tracking number 1234 5678 9012 3456 is with the courier",
            "refund of 1,299.00 EUR on 2026-11-20",
            "reference GB00 WEST 1234 5698 7654 32 is not an account",
            "ticket 000-12-3456 is closed",
            "the API key rotates every 30 days",
            "version 1.2.3 of the app",
            "call between 9 and 17",
        ];
        for text in cases {
            assert!(
                kinds(text).is_empty(),
                "{text:?}: flagged {:?}",
                kinds(text)
            );
        }
    }

    #[test]
    fn redact_or_reject_per_policy() {
        let p = MemoryPolicy::default();
        let s = screen("Mail jane@example.com or card 4111111111111111", &p);
        assert_eq!(s.text, "Mail [email] or card [card]");
        assert_eq!(s.rejected().as_deref(), Some("card"));
        let s = screen("Mail jane@example.com", &p);
        assert_eq!(s.text, "Mail [email]");
        assert_eq!(s.rejected(), None);
        assert_eq!(s.actions[0].action, "redacted");
    }

    #[test]
    fn checksums() {
        assert!(luhn("4111111111111111"));
        assert!(!luhn("4111111111111112"));
        assert!(iban_valid("GB82WEST12345698765432"));
        assert!(!iban_valid("GB00WEST12345698765432"));
    }
}
