//! The PII screen applied to every fact before it is written: e-mail addresses, phone numbers,
//! card numbers (Luhn-checked), IBANs (mod-97-checked), national-ID-like numbers (US SSN, UK
//! NINO) and secrets (API keys, tokens, private keys). Per the policy a kind is redacted (the
//! match becomes `[kind]`) or rejects the fact; the result says what was done, never the values.
//!
//! Checksums and shape rules keep near-misses out: an order number, a date, a 16-digit tracking
//! number that fails Luhn, an IBAN-shaped string that fails mod 97, "the API key rotates".
//!
//! Digits in any script count: the text is screened through a one-to-one fold (every Unicode
//! decimal digit to its ASCII digit, full-width forms and Unicode dashes and spaces to ASCII), so
//! "４１１１ １１１１ １１１１ １１１１" is a card like its ASCII spelling. The patterns themselves are
//! ASCII-only and the checks read ASCII digits, so no script can reach a check with a shape it
//! does not expect; matches are mapped back to the original text by character, never by byte.

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

/// The ASCII digits of `s` (the screen folds other scripts' digits to ASCII before any check).
fn digits(s: &str) -> Vec<u32> {
    s.chars()
        .filter(char::is_ascii_digit)
        .filter_map(|c| c.to_digit(10))
        .collect()
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
    let compact: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem: u32 = 0;
    for &c in tail.iter().chain(head) {
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
    let date = DATE.get_or_init(|| Regex::new(r"^[0-9]{4}[-/.][0-9]{2}[-/.][0-9]{2}").ok());
    !date.as_ref().is_some_and(|d| d.is_match(s.trim()))
}

fn ssn_ok(s: &str) -> bool {
    let d = digits(s);
    let &[a1, a2, a3, g1, g2, s1, s2, s3, s4] = d.as_slice() else {
        return false;
    };
    let area = a1 * 100 + a2 * 10 + a3;
    let group = g1 * 10 + g2;
    let serial = s1 * 1000 + s2 * 100 + s3 * 10 + s4;
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
                r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
                iban_valid,
            ),
            ("card", r"\b(?:[0-9][ -]?){12,18}[0-9]\b", luhn),
            ("national_id", r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b", ssn_ok),
            (
                "national_id",
                r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]\b",
                always,
            ),
            (
                "email",
                r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
                always,
            ),
            (
                "phone",
                r"\+[0-9]{1,3}[ .-]?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{1,4}(?:[ .-]?[0-9]{2,4}){1,4}\b",
                phone_ok,
            ),
            (
                "phone",
                r"(?:\([0-9]{3}\) ?|\b[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}\b|\b0[0-9]{2,4}[ .-]?[0-9]{3,4}[ .-]?[0-9]{3,4}\b",
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

/// The decimal value of `c` if it is a Unicode decimal digit (general category Nd) of any script.
/// Unicode encodes every script's digits as a contiguous run 0..=9, and runs that touch are whole
/// runs, so the value is the distance from the start of the contiguous block, modulo 10.
fn decimal_value(c: char) -> Option<char> {
    if c.is_ascii_digit() {
        return Some(c);
    }
    if !c.is_numeric() {
        return None;
    }
    static ND: OnceLock<Option<Regex>> = OnceLock::new();
    let nd = ND.get_or_init(|| Regex::new(r"\A\d\z").ok()).as_ref()?;
    let is_nd = |c: char| {
        let mut buf = [0u8; 4];
        nd.is_match(c.encode_utf8(&mut buf))
    };
    if !is_nd(c) {
        return None;
    }
    let mut start = u32::from(c);
    // Digit blocks are at most a few runs long; the bound only keeps the walk finite.
    for _ in 0..200 {
        match start.checked_sub(1).and_then(char::from_u32) {
            Some(prev) if is_nd(prev) => start -= 1,
            _ => break,
        }
    }
    let value = (u32::from(c) - start) % 10;
    char::from_digit(value, 10)
}

/// One character of the fold the detectors read: digits of every script to ASCII, full-width
/// forms to ASCII, Unicode spaces and dashes to their ASCII spelling; anything else unchanged.
fn fold_char(c: char) -> char {
    let cp = u32::from(c);
    if c.is_ascii() {
        return c;
    }
    match cp {
        0xFF01..=0xFF5E => char::from_u32(cp - 0xFEE0).unwrap_or(c),
        0x00A0 | 0x2000..=0x200A | 0x202F | 0x205F | 0x3000 => ' ',
        0x2010..=0x2015 | 0x2212 | 0xFE58 | 0xFE63 => '-',
        _ => decimal_value(c).unwrap_or(c),
    }
}

/// `text` folded one character for one character, with each folded character's byte offset in
/// the fold and in `text` (plus both ends), so a match in the fold maps back to `text` exactly.
struct Folded {
    text: String,
    offsets: Vec<(usize, usize)>,
}

impl Folded {
    fn new(original: &str) -> Folded {
        let mut text = String::with_capacity(original.len());
        let mut offsets = Vec::with_capacity(original.len() + 1);
        for (at, c) in original.char_indices() {
            offsets.push((text.len(), at));
            text.push(fold_char(c));
        }
        offsets.push((text.len(), original.len()));
        Folded { text, offsets }
    }

    /// The offset in the original text of the character at `folded` in the fold.
    fn original(&self, folded: usize) -> Option<usize> {
        self.offsets
            .binary_search_by_key(&folded, |&(f, _)| f)
            .ok()
            .and_then(|i| self.offsets.get(i))
            .map(|&(_, o)| o)
    }
}

/// Screens `text` under `policy`. Never panics, whatever the text.
pub fn screen(text: &str, policy: &MemoryPolicy) -> Screened {
    let mut out = text.to_owned();
    let mut actions: Vec<PiiAction> = Vec::new();
    for d in detectors() {
        let folded = Folded::new(&out);
        let mut count = 0;
        let mut replaced = String::with_capacity(out.len());
        let mut last = 0;
        for m in d.re.find_iter(&folded.text) {
            if !(d.check)(m.as_str()) {
                continue;
            }
            let (Some(a), Some(b)) = (folded.original(m.start()), folded.original(m.end())) else {
                continue;
            };
            let Some(before) = out.get(last..a) else {
                continue;
            };
            replaced.push_str(before);
            replaced.push_str(&format!("[{}]", d.kind));
            last = b;
            count += 1;
        }
        if count == 0 {
            continue;
        }
        replaced.push_str(out.get(last..).unwrap_or_default());
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

    /// Regression (issue 12, item 12): digits of other scripts panicked the SSN and IBAN checks
    /// (ASCII-only digit parsing and byte offsets behind a Unicode `\d`), and a full-width card
    /// number passed the screen unredacted.
    #[test]
    fn digits_of_any_script_are_screened_without_panicking() {
        let p = MemoryPolicy::default();
        let s = screen("SSN １２３-４５-６７８９ was given", &p);
        assert_eq!(s.text, "SSN [national_id] was given");
        // Check digits 00 fail mod 97: screened as text, not as an IBAN, and no panic.
        let s = screen("IBAN DE०० 1234 5678 9012 3456 please", &p);
        assert!(s.actions.is_empty(), "{s:?}");
        let s = screen("IBAN DE८९ ३७०४ ००४४ ०५३२ ०१३० ०० please", &p);
        assert_eq!(s.text, "IBAN [iban] please");
        let s = screen(
            "paid with ４１１１　１１１１　１１１１　１１１１ last time",
            &p,
        );
        assert_eq!(s.text, "paid with [card] last time");
        assert_eq!(s.rejected().as_deref(), Some("card"));
        let s = screen(
            "card ４１１１-１１１１-１１１１-１１１１ and mail ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ",
            &p,
        );
        assert_eq!(s.text, "card [card] and mail [email]");
        // Mathematical digits sit in five touching runs; each still reads as its own value.
        assert_eq!(decimal_value('\u{1D7D7}'), Some('9'));
        assert_eq!(decimal_value('\u{1D7D8}'), Some('0'));
        assert_eq!(decimal_value('²'), None);
        assert!(!iban_valid("DE००12345678901234567"));
    }

    #[test]
    fn checksums() {
        assert!(luhn("4111111111111111"));
        assert!(!luhn("4111111111111112"));
        assert!(iban_valid("GB82WEST12345698765432"));
        assert!(!iban_valid("GB00WEST12345698765432"));
    }

    mod never_panics {
        use super::super::*;
        use proptest::prelude::*;

        /// Characters that reach the detectors' shapes: digits of several scripts, separators,
        /// letters, `@`, `+`, parentheses, full-width forms.
        fn tricky() -> impl Strategy<Value = String> {
            let chars = prop::sample::select(vec![
                '0',
                '1',
                '4',
                '9',
                '-',
                ' ',
                '.',
                '/',
                '(',
                ')',
                '+',
                '@',
                'A',
                'D',
                'E',
                'G',
                'B',
                'x',
                '１',
                '４',
                '９',
                '－',
                '　',
                '०',
                '८',
                '٣',
                '৯',
                '\u{1D7CE}',
                '\u{2212}',
                '\u{00A0}',
                'é',
                '€',
                '\u{0301}',
                '＠',
                'Ａ',
                'Ｅ',
            ]);
            prop::collection::vec(chars, 0..80).prop_map(|v| v.into_iter().collect())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn the_screen_never_panics_on_any_text(text in any::<String>()) {
                let s = screen(&text, &MemoryPolicy::default());
                prop_assert!(s.actions.iter().all(|a| a.count > 0));
            }

            #[test]
            fn the_screen_never_panics_on_digit_shaped_text(text in tricky()) {
                let s = screen(&text, &MemoryPolicy::default());
                if s.actions.is_empty() {
                    prop_assert_eq!(s.text, text);
                }
            }
        }
    }
}
