//! The principal of a TLS client, the way Apache Kafka derives it: the certificate's subject
//! printed as Java's `X500Principal.getName()` prints it (RFC 2253), then rewritten by
//! `ssl.principal.mapping.rules`.
//!
//! Both halves follow Java byte for byte where it matters for ACLs written against Kafka:
//! the subject text decides which ACLs apply, so an escaping difference would silently grant
//! or deny access. The rules are Java regular expressions; they are run by the `regex` crate
//! (linear time, so neither a hostile pattern nor a hostile certificate can stall a
//! connection) after a small translation of the Java escapes whose meaning differs.

use std::collections::HashMap;
use std::fmt;

use regex::{Captures, Regex, RegexBuilder};

use crate::error::{Error, Result};

// ---------------------------------------------------------------------------------------------
// Subject names
// ---------------------------------------------------------------------------------------------

/// The subject of a DER certificate as RFC 2253 text the way Java's X500Principal.getName()
/// prints it (what Kafka uses), e.g. `CN=writer,OU=Eng,O=Acme,C=US`.
pub fn subject_name(cert_der: &[u8]) -> Result<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| Error::Tls(format!("client certificate does not parse: {e}")))?;
    distinguished_name(cert.subject().as_raw())
}

/// A DER-encoded X.501 `Name` as Java's `X500Principal.getName()` prints it: RDNs last to
/// first, joined by `,`; the values of a multi-valued RDN in encoded order, joined by `+`.
pub fn distinguished_name(name_der: &[u8]) -> Result<String> {
    let (name, trailing) = read_tlv(name_der)?;
    if name.tag != TAG_SEQUENCE {
        return Err(bad_name("the name is not a SEQUENCE"));
    }
    if !trailing.is_empty() {
        return Err(bad_name("bytes after the name"));
    }
    let mut rdns = Vec::new();
    let mut rest = name.content;
    while !rest.is_empty() {
        let (rdn, after) = read_tlv(rest)?;
        rest = after;
        if rdn.tag != TAG_SET {
            return Err(bad_name("a relative distinguished name is not a SET"));
        }
        if rdn.content.is_empty() {
            return Err(bad_name("an empty relative distinguished name"));
        }
        let mut avas = Vec::new();
        let mut inner = rdn.content;
        while !inner.is_empty() {
            let (ava, after) = read_tlv(inner)?;
            inner = after;
            avas.push(attribute(ava)?);
        }
        rdns.push(avas.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;

/// The string types Java prints as text; any other value is printed as hex.
const STRING_TAGS: [u8; 6] = [
    0x0c, // UTF8String
    0x13, // PrintableString
    0x14, // TeletexString
    0x16, // IA5String
    0x1b, // GeneralString
    0x1e, // BMPString
];

/// The only attribute names Java's RFC 2253 output uses; everything else is a dotted OID.
const KEYWORDS: [(&str, &str); 9] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

/// Java refuses longer OID encodings; so do we, which also bounds the work per attribute.
const MAX_OID_BYTES: usize = 4096;

fn bad_name(what: &str) -> Error {
    Error::Tls(format!("malformed certificate subject: {what}"))
}

/// One DER element.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    /// Tag, length and content: what Java prints after `#`.
    whole: &'a [u8],
}

/// Reads one DER element from the front of `input`, strictly: definite, minimal lengths and
/// single-byte tags, as Java's DER decoder insists on.
fn read_tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8])> {
    let truncated = || bad_name("truncated DER");
    let (&tag, rest) = input.split_first().ok_or_else(truncated)?;
    if tag & 0x1f == 0x1f {
        return Err(bad_name("multi-byte DER tag"));
    }
    let (&first, mut rest) = rest.split_first().ok_or_else(truncated)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 {
            return Err(bad_name("indefinite DER length"));
        }
        if count > 4 {
            return Err(bad_name("DER length too large"));
        }
        let (bytes, after) = rest.split_at_checked(count).ok_or_else(truncated)?;
        rest = after;
        if bytes.first() == Some(&0) {
            return Err(bad_name("non-minimal DER length"));
        }
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if len < 0x80 {
            return Err(bad_name("non-minimal DER length"));
        }
        len
    };
    let header = input.len() - rest.len();
    let (content, after) = rest.split_at_checked(len).ok_or_else(truncated)?;
    let whole = input.get(..header + len).ok_or_else(truncated)?;
    Ok((
        Tlv {
            tag,
            content,
            whole,
        },
        after,
    ))
}

/// One `type=value` pair.
fn attribute(ava: Tlv<'_>) -> Result<String> {
    if ava.tag != TAG_SEQUENCE {
        return Err(bad_name("an attribute is not a SEQUENCE"));
    }
    let (oid, rest) = read_tlv(ava.content)?;
    if oid.tag != TAG_OID {
        return Err(bad_name("an attribute type is not an OBJECT IDENTIFIER"));
    }
    let (value, rest) = read_tlv(rest)?;
    if !rest.is_empty() {
        return Err(bad_name("bytes after an attribute value"));
    }
    let oid = oid_text(oid.content)?;
    let keyword = KEYWORDS
        .iter()
        .find(|(dotted, _)| *dotted == oid)
        .map(|(_, keyword)| *keyword);
    let mut out = String::new();
    match keyword {
        Some(keyword) if STRING_TAGS.contains(&value.tag) => {
            out.push_str(keyword);
            out.push('=');
            escape_value(&mut out, value.content);
        }
        Some(keyword) => {
            out.push_str(keyword);
            out.push('=');
            push_hex(&mut out, value.whole);
        }
        None => {
            out.push_str(&oid);
            out.push('=');
            push_hex(&mut out, value.whole);
        }
    }
    Ok(out)
}

/// `#` and the lowercase hex of the whole DER value, as RFC 2253 section 2.4 prescribes for
/// values without a string form.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('#');
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

/// A string value, escaped as Java does.
///
/// Java decodes every string type's bytes as UTF-8 (so a BMPString comes out with NULs), puts
/// a backslash before `, = + < > # ; " \` anywhere in the value, writes NUL as `\00`, and
/// backslash-escapes leading and trailing spaces and carriage returns.
fn escape_value(out: &mut String, content: &[u8]) {
    let text = String::from_utf8_lossy(content);
    let mut escaped = Vec::with_capacity(text.len());
    for c in text.chars() {
        match c {
            ',' | '=' | '+' | '<' | '>' | '#' | ';' | '"' | '\\' => {
                escaped.push('\\');
                escaped.push(c);
            }
            '\0' => escaped.extend(['\\', '0', '0']),
            _ => escaped.push(c),
        }
    }
    let blank = |c: &char| *c == ' ' || *c == '\r';
    let lead = escaped.iter().take_while(|c| blank(c)).count();
    let trail = escaped.iter().rev().take_while(|c| blank(c)).count();
    let len = escaped.len();
    for (i, c) in escaped.into_iter().enumerate() {
        if i < lead || i + trail >= len {
            out.push('\\');
        }
        out.push(c);
    }
}

/// An OBJECT IDENTIFIER's content octets as dotted decimal, arcs of any size included.
fn oid_text(content: &[u8]) -> Result<String> {
    if content.is_empty() || content.len() > MAX_OID_BYTES {
        return Err(bad_name("bad OBJECT IDENTIFIER length"));
    }
    if content.last().is_some_and(|b| b & 0x80 != 0) {
        return Err(bad_name("truncated OBJECT IDENTIFIER"));
    }
    let mut out = String::new();
    let mut start = 0;
    let mut first = true;
    for (i, &b) in content.iter().enumerate() {
        if b & 0x80 != 0 {
            continue;
        }
        let arc = content.get(start..=i).unwrap_or_default();
        start = i + 1;
        if arc.first() == Some(&0x80) {
            return Err(bad_name("non-minimal OBJECT IDENTIFIER arc"));
        }
        if first {
            first = false;
            // The first encoded arc packs the first two: 40 * x + y, with x in 0..=2.
            match arc {
                [v] if *v < 40 => out.push_str(&format!("0.{v}")),
                [v] if *v < 80 => out.push_str(&format!("1.{}", v - 40)),
                _ => {
                    out.push_str("2.");
                    out.push_str(&decimal(arc, 80));
                }
            }
        } else {
            out.push('.');
            out.push_str(&decimal(arc, 0));
        }
    }
    Ok(out)
}

/// The base-128 digits `arc` (continuation bits included) minus `minus`, in decimal.
/// `minus` is at most the value, which the caller guarantees.
fn decimal(arc: &[u8], minus: u32) -> String {
    const BASE: u64 = 1_000_000_000;
    // Little-endian limbs in base 10^9: arcs may exceed any machine integer (UUID OIDs).
    let mut limbs: Vec<u64> = vec![0];
    for &b in arc {
        let mut carry = u64::from(b & 0x7f);
        for limb in limbs.iter_mut() {
            let v = *limb * 128 + carry;
            *limb = v % BASE;
            carry = v / BASE;
        }
        if carry > 0 {
            limbs.push(carry);
        }
    }
    let mut borrow = u64::from(minus);
    for limb in limbs.iter_mut() {
        if borrow == 0 {
            break;
        }
        if *limb >= borrow {
            *limb -= borrow;
            borrow = 0;
        } else {
            *limb = *limb + BASE - borrow;
            borrow = 1;
        }
    }
    while limbs.len() > 1 && limbs.last() == Some(&0) {
        limbs.pop();
    }
    let mut out = String::new();
    for (i, limb) in limbs.iter().rev().enumerate() {
        if i == 0 {
            out.push_str(&limb.to_string());
        } else {
            out.push_str(&format!("{limb:09}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Mapping rules
// ---------------------------------------------------------------------------------------------

/// Kafka's ssl.principal.mapping.rules: `RULE:pattern/replacement/` with an optional `L` or
/// `U` suffix, and `DEFAULT`, separated by commas. The first rule whose pattern matches the
/// whole name wins; DEFAULT yields the name unchanged; when no rule matches, `map` fails.
#[derive(Clone, Debug)]
pub struct PrincipalMapper {
    rules: Vec<Rule>,
}

#[derive(Clone, Debug)]
enum Rule {
    Default,
    Replace(Replace),
}

#[derive(Clone, Debug)]
struct Replace {
    /// The pattern as written, for messages.
    pattern: String,
    /// The replacement as written, for messages.
    replacement: String,
    /// The pattern anchored at both ends: Java's `Matcher.matches()`.
    whole: Regex,
    /// The pattern alone: what Java's `String.replaceAll` searches with.
    each: Regex,
    pieces: Vec<Piece>,
    case: Case,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Group(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

impl Default for PrincipalMapper {
    fn default() -> Self {
        Self::default_rules()
    }
}

impl PrincipalMapper {
    /// Parses the rules the way Kafka splits them: a pattern or replacement runs to the next
    /// `/` not escaped by `\`, so commas inside a pattern need no escaping; empty entries
    /// between commas are ignored, and an empty list is allowed (every `map` then fails, as in
    /// Kafka).
    pub fn parse(rules: &str) -> Result<Self> {
        // Java's String.trim(): every char up to and including space.
        let mut rest = rules.trim_matches(|c: char| c <= ' ');
        let mut parsed = Vec::new();
        loop {
            rest = skip_java_space(rest);
            if rest.is_empty() {
                break;
            }
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
                continue;
            }
            let after = if rest.starts_with("RULE:") {
                let (rule, after) = parse_replace(rest)?;
                parsed.push(Rule::Replace(rule));
                after
            } else if let Some(after) = rest.strip_prefix("DEFAULT") {
                parsed.push(Rule::Default);
                after
            } else {
                return Err(Error::InvalidRule(format!(
                    "`{}` is neither DEFAULT nor RULE:pattern/replacement/[LU]",
                    up_to_comma(rest)
                )));
            };
            rest = skip_java_space(after);
            if rest.is_empty() {
                break;
            }
            match rest.strip_prefix(',') {
                Some(after) => rest = after,
                None => {
                    return Err(Error::InvalidRule(format!(
                        "unexpected `{}` after a rule",
                        up_to_comma(rest)
                    )))
                }
            }
        }
        Ok(Self { rules: parsed })
    }

    /// Kafka's default, `DEFAULT`: the subject name itself is the principal.
    pub fn default_rules() -> Self {
        Self {
            rules: vec![Rule::Default],
        }
    }

    /// The principal name for a subject name, or an error when no rule applies (Kafka's
    /// NoMatchingRule, which fails the client's authentication).
    pub fn map(&self, name: &str) -> Result<String> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Ok(name.to_string()),
                Rule::Replace(rule) => {
                    if rule.whole.is_match(name) {
                        let replaced = replace_all(&rule.each, name, &rule.pieces);
                        return Ok(match rule.case {
                            Case::Keep => replaced,
                            Case::Lower => replaced.to_lowercase(),
                            Case::Upper => replaced.to_uppercase(),
                        });
                    }
                }
            }
        }
        Err(Error::AuthenticationFailed(format!(
            "no ssl.principal.mapping.rules rule matches the certificate subject {name:?}"
        )))
    }
}

impl fmt::Display for PrincipalMapper {
    /// The rules as Kafka lists them in its logs: `[RULE:pattern/replacement/L, DEFAULT]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match rule {
                Rule::Default => f.write_str("DEFAULT")?,
                Rule::Replace(r) => {
                    write!(f, "RULE:{}/{}", r.pattern, r.replacement)?;
                    match r.case {
                        Case::Keep => {}
                        Case::Lower => f.write_str("/L")?,
                        Case::Upper => f.write_str("/U")?,
                    }
                }
            }
        }
        f.write_str("]")
    }
}

/// Java's `\s`: space, tab, newline, vertical tab, form feed, carriage return.
fn is_java_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{0b}' | '\u{0c}' | '\r')
}

fn skip_java_space(s: &str) -> &str {
    s.trim_start_matches(is_java_space)
}

/// The text of a bad entry for an error message.
fn up_to_comma(s: &str) -> &str {
    s.split(',')
        .next()
        .unwrap_or(s)
        .trim_end_matches(is_java_space)
}

/// Splits `s` at the first `/` not escaped by `\`; backslash pairs stay as written.
fn take_part(s: &str) -> Option<(&str, &str)> {
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next()?;
            }
            '/' => return Some((s.get(..i)?, s.get(i + 1..)?)),
            _ => {}
        }
    }
    None
}

/// One `RULE:pattern/replacement/[LU]` at the front of `s`; returns it and what follows.
fn parse_replace(s: &str) -> Result<(Replace, &str)> {
    let malformed = || {
        Error::InvalidRule(format!(
            "`{}` is not of the form RULE:pattern/replacement/[LU]",
            up_to_comma(s)
        ))
    };
    let body = s.strip_prefix("RULE:").ok_or_else(malformed)?;
    let (pattern, rest) = take_part(body).ok_or_else(malformed)?;
    let (replacement, rest) = take_part(rest).ok_or_else(malformed)?;
    let (case, rest) = if let Some(rest) = rest.strip_prefix('L') {
        (Case::Lower, rest)
    } else if let Some(rest) = rest.strip_prefix('U') {
        (Case::Upper, rest)
    } else {
        (Case::Keep, rest)
    };

    let translated = translate_java_regex(pattern);
    let compile = |source: &str| {
        RegexBuilder::new(source)
            // Rules come from the operator; the limit only stops absurd patterns from
            // eating memory.
            .size_limit(1 << 22)
            .build()
            .map_err(|e| Error::InvalidRule(format!("pattern `{pattern}`: {e}")))
    };
    // Compiled alone first, so an unbalanced pattern cannot escape the anchoring group below.
    let each = compile(&translated)?;
    // A pattern that ends in a `#` comment of (?x) mode would swallow the closing anchor;
    // only then is the plain form unbalanced, and a newline (whitespace in that mode) ends
    // the comment.
    let whole = compile(&format!("\\A(?:{translated})\\z"))
        .or_else(|_| compile(&format!("\\A(?:{translated}\n)\\z")))?;
    let names: HashMap<&str, usize> = each
        .capture_names()
        .enumerate()
        .filter_map(|(i, name)| name.map(|n| (n, i)))
        .collect();
    let groups = each.captures_len().saturating_sub(1);
    let pieces = parse_replacement(replacement, groups, &names)?;
    Ok((
        Replace {
            pattern: pattern.to_string(),
            replacement: replacement.to_string(),
            whole,
            each,
            pieces,
            case,
        },
        rest,
    ))
}

/// Rewrites the Java escapes that the `regex` crate reads differently: `\d \w \s` and their
/// negations are ASCII-only in Java but Unicode-aware in `regex`, and `\<` `\>` are literal
/// angle brackets in Java but word boundaries in `regex`. The POSIX-class forms used here
/// are valid both inside and outside a bracket class.
fn translate_java_regex(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str("[[:digit:]]"),
            Some('D') => out.push_str("[[:^digit:]]"),
            Some('w') => out.push_str("[[:word:]]"),
            Some('W') => out.push_str("[[:^word:]]"),
            Some('s') => out.push_str("[[:space:]]"),
            Some('S') => out.push_str("[[:^space:]]"),
            Some(c @ ('<' | '>')) => out.push(c),
            Some(c) => {
                out.push('\\');
                out.push(c);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Compiles a replacement the way Kafka and Java read it: `\x` is a literal `x`, `$n` and
/// `${name}` insert a group. Like Java, `$` followed by digits takes the longest group number
/// the pattern has (`$12` with 3 groups is group 1 then `2`); like Kafka, a reference past the
/// last group stays literal text (`$4` with 3 groups is `$4`).
///
/// Java would throw on every match for a lone `$`, a trailing `\`, an unknown group name or
/// `$1` in a pattern without groups; these are rejected here, when the rules are parsed.
fn parse_replacement(
    replacement: &str,
    groups: usize,
    names: &HashMap<&str, usize>,
) -> Result<Vec<Piece>> {
    let err = |what: &str| Error::InvalidRule(format!("replacement `{replacement}`: {what}"));
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = replacement.chars().peekable();
    let flush = |literal: &mut String, pieces: &mut Vec<Piece>| {
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(literal)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => literal.push(escaped),
                None => return Err(err("ends with a lone backslash")),
            },
            '$' => match chars.peek().copied() {
                Some('{') => {
                    chars.next();
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(err("`${` without a closing `}`")),
                        }
                    }
                    let group = names
                        .get(name.as_str())
                        .copied()
                        .ok_or_else(|| err(&format!("no group named `{name}`")))?;
                    flush(&mut literal, &mut pieces);
                    pieces.push(Piece::Group(group));
                }
                Some(d) if d.is_ascii_digit() => {
                    let first = d.to_digit(10).map_or(0, |v| v as usize);
                    if first > groups {
                        if groups == 0 {
                            return Err(err(&format!(
                                "refers to group {first} but the pattern has no groups"
                            )));
                        }
                        // Kafka turns a reference past the last group into literal text.
                        literal.push('$');
                        continue;
                    }
                    chars.next();
                    let mut group = first;
                    while let Some(next) = chars.peek().and_then(|c| c.to_digit(10)) {
                        match group
                            .checked_mul(10)
                            .and_then(|g| g.checked_add(next as usize))
                        {
                            Some(longer) if longer <= groups => {
                                group = longer;
                                chars.next();
                            }
                            _ => break,
                        }
                    }
                    flush(&mut literal, &mut pieces);
                    pieces.push(Piece::Group(group));
                }
                _ => return Err(err("`$` must be followed by a group number or {name}")),
            },
            c => literal.push(c),
        }
    }
    flush(&mut literal, &mut pieces);
    Ok(pieces)
}

/// Java's `String.replaceAll`: every non-overlapping match, left to right, replaced. Unlike
/// the `regex` crate's iterator, Java also replaces an empty match right after a non-empty
/// one (`"abc".replaceAll(".*", "x")` is `"xx"`), which changes what some rules produce.
fn replace_all(re: &Regex, text: &str, pieces: &[Piece]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while from <= text.len() {
        let Some(caps) = re.captures_at(text, from) else {
            break;
        };
        let Some(m) = caps.get(0) else {
            break;
        };
        out.push_str(text.get(copied..m.start()).unwrap_or_default());
        expand(&caps, pieces, &mut out);
        copied = m.end();
        from = if m.is_empty() {
            // Step over one character, as Java does after an empty match.
            match text.get(m.end()..).and_then(|t| t.chars().next()) {
                Some(c) => m.end() + c.len_utf8(),
                None => break,
            }
        } else {
            m.end()
        };
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    out
}

fn expand(caps: &Captures<'_>, pieces: &[Piece], out: &mut String) {
    for piece in pieces {
        match piece {
            Piece::Literal(s) => out.push_str(s),
            // A group that took no part in the match adds nothing, as in Java.
            Piece::Group(i) => out.push_str(caps.get(*i).map_or("", |m| m.as_str())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, KeyPair};

    // ---- DER builders for hand-made names ----

    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else if len < 0x100 {
            out.extend([0x81, len as u8]);
        } else {
            out.extend([0x82, (len >> 8) as u8, len as u8]);
        }
        out.extend_from_slice(content);
        out
    }

    fn oid(arcs: &[u128]) -> Vec<u8> {
        let mut content = Vec::new();
        let mut push = |mut v: u128| {
            let mut groups = vec![(v & 0x7f) as u8];
            v >>= 7;
            while v > 0 {
                groups.push((v & 0x7f) as u8 | 0x80);
                v >>= 7;
            }
            groups.reverse();
            content.extend(groups);
        };
        push(arcs[0] * 40 + arcs[1]);
        for &arc in &arcs[2..] {
            push(arc);
        }
        der(TAG_OID, &content)
    }

    const CN: &[u128] = &[2, 5, 4, 3];
    const OU: &[u128] = &[2, 5, 4, 11];
    const O: &[u128] = &[2, 5, 4, 10];
    const C: &[u128] = &[2, 5, 4, 6];

    fn ava(arcs: &[u128], value: Vec<u8>) -> Vec<u8> {
        der(TAG_SEQUENCE, &[oid(arcs), value].concat())
    }

    fn utf8(s: &str) -> Vec<u8> {
        der(0x0c, s.as_bytes())
    }

    fn printable(s: &str) -> Vec<u8> {
        der(0x13, s.as_bytes())
    }

    /// A Name from RDNs given first to last (the order they are encoded in).
    fn name(rdns: &[Vec<Vec<u8>>]) -> Vec<u8> {
        let rdns: Vec<u8> = rdns
            .iter()
            .flat_map(|avas| der(TAG_SET, &avas.concat()))
            .collect();
        der(TAG_SEQUENCE, &rdns)
    }

    fn dn(rdns: &[Vec<Vec<u8>>]) -> String {
        distinguished_name(&name(rdns)).expect("valid name")
    }

    fn cert_with(dn: DistinguishedName) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = dn;
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    // ---- subject names ----

    #[test]
    fn subject_of_a_real_certificate_reads_last_rdn_first() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "US");
        dn.push(DnType::OrganizationName, "Acme");
        dn.push(DnType::OrganizationalUnitName, "Eng");
        dn.push(DnType::CommonName, "alice");
        assert_eq!(
            subject_name(&cert_with(dn)).expect("subject"),
            "CN=alice,OU=Eng,O=Acme,C=US"
        );
    }

    #[test]
    fn subject_keywords_and_oids_as_java_prints_them() {
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
            "com",
        );
        dn.push(DnType::LocalityName, "Fulton");
        dn.push(DnType::StateOrProvinceName, "MD");
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 9]), "1 Main St");
        dn.push(
            DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 1]),
            "jdoe",
        );
        // emailAddress: not an RFC 2253 keyword, so Java prints the OID and the DER in hex.
        dn.push(
            DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
            DnValue::Ia5String("a@b.c".try_into().expect("ia5")),
        );
        dn.push(
            DnType::CommonName,
            DnValue::PrintableString("Duke".try_into().expect("printable")),
        );
        assert_eq!(
            subject_name(&cert_with(dn)).expect("subject"),
            "CN=Duke,1.2.840.113549.1.9.1=#16056140622e63,UID=jdoe,STREET=1 Main St,ST=MD,\
             L=Fulton,DC=com"
        );
    }

    #[test]
    fn subject_values_are_escaped_like_java() {
        let cases = [
            ("a,b", r"CN=a\,b"),
            ("a+b", r"CN=a\+b"),
            ("a=b", r"CN=a\=b"),
            (r#"say "hi""#, r#"CN=say \"hi\""#),
            (r"back\slash", r"CN=back\\slash"),
            ("<tag>", r"CN=\<tag\>"),
            ("semi;colon", r"CN=semi\;colon"),
            ("#hash", r"CN=\#hash"),
            ("mid#hash", r"CN=mid\#hash"),
            (" lead", r"CN=\ lead"),
            ("trail ", r"CN=trail\ "),
            ("  two  ", r"CN=\ \ two\ \ "),
            ("in side", "CN=in side"),
            ("\rcr", "CN=\\\rcr"),
            ("nul\0", r"CN=nul\00"),
            ("Zoë", "CN=Zoë"),
            ("", "CN="),
            ("Tkac, Adam", r"CN=Tkac\, Adam"),
        ];
        for (value, expected) in cases {
            assert_eq!(dn(&[vec![ava(CN, utf8(value))]]), expected, "{value:?}");
        }
    }

    #[test]
    fn multi_valued_rdn_keeps_encoded_order() {
        let name = [
            vec![ava(C, printable("US"))],
            vec![ava(O, utf8("Acme"))],
            vec![ava(OU, utf8("Eng")), ava(CN, utf8("writer"))],
        ];
        assert_eq!(dn(&name), "OU=Eng+CN=writer,O=Acme,C=US");
        let name = [vec![ava(CN, utf8("a+b")), ava(O, utf8("c,d"))]];
        assert_eq!(dn(&name), r"CN=a\+b+O=c\,d");
    }

    #[test]
    fn non_string_values_and_unknown_types_print_as_hex() {
        // CN as an INTEGER, an unknown OID with a UTF8String, a BMPString (Java decodes its
        // bytes as UTF-8, so the high zero bytes come out as escaped NULs).
        let name = [
            vec![ava(CN, der(0x02, &[0x05]))],
            vec![ava(&[1, 3, 6, 1, 4, 1, 99999, 1], utf8("x"))],
            vec![ava(CN, der(0x1e, &[0, b'a', 0, b'l']))],
            vec![ava(CN, der(0x1c, &[0, 0, 0, b'u']))],
        ];
        assert_eq!(
            dn(&name),
            r"CN=#1c0400000075,CN=\00a\00l,1.3.6.1.4.1.99999.1=#0c0178,CN=#020105"
        );
    }

    #[test]
    fn large_and_small_oid_arcs() {
        // The X.667 example UUID OID, 2.25.<128-bit integer>.
        let uuid = 329_800_735_698_586_629_295_641_978_511_506_172_918u128;
        assert_eq!(
            dn(&[vec![ava(&[2, 25, uuid], utf8("x"))]]),
            "2.25.329800735698586629295641978511506172918=#0c0178"
        );
        assert_eq!(dn(&[vec![ava(&[0, 0], utf8("x"))]]), "0.0=#0c0178");
        assert_eq!(dn(&[vec![ava(&[1, 39, 5], utf8("x"))]]), "1.39.5=#0c0178");
        assert_eq!(dn(&[vec![ava(&[2, 999, 1], utf8("x"))]]), "2.999.1=#0c0178");
        assert_eq!(
            decimal(&[0x81, 0x80, 0x80, 0x80, 0x80, 0x00], 0),
            "34359738368"
        );
        assert_eq!(decimal(&[0x81, 0x00], 80), "48");
    }

    #[test]
    fn long_values_use_long_lengths() {
        let long = "x".repeat(300);
        assert_eq!(dn(&[vec![ava(CN, utf8(&long))]]), format!("CN={long}"));
    }

    #[test]
    fn empty_subject_is_empty_text() {
        assert_eq!(distinguished_name(&[0x30, 0x00]).expect("empty"), "");
    }

    #[test]
    fn malformed_names_are_errors() {
        let good = name(&[vec![ava(CN, utf8("a"))]]);
        let bad: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x30],
            vec![0x30, 0x05, 0x31],
            vec![0x31, 0x00],
            [good.clone(), vec![0]].concat(),
            vec![0x30, 0x80, 0x00, 0x00],
            vec![0x30, 0x81, 0x00],
            vec![0x30, 0x82, 0x00, 0x80],
            vec![0x30, 0x85, 1, 0, 0, 0, 0],
            vec![0x30, 0x02, 0x31, 0x00],
            vec![0x30, 0x04, 0x31, 0x02, 0x04, 0x00],
            name(&[vec![der(
                TAG_SEQUENCE,
                &[der(0x04, b"x"), utf8("a")].concat(),
            )]]),
            name(&[vec![der(
                TAG_SEQUENCE,
                &[der(TAG_OID, &[]), utf8("a")].concat(),
            )]]),
            name(&[vec![der(
                TAG_SEQUENCE,
                &[der(TAG_OID, &[0x85]), utf8("a")].concat(),
            )]]),
            name(&[vec![der(
                TAG_SEQUENCE,
                &[der(TAG_OID, &[0x80, 1]), utf8("a")].concat(),
            )]]),
            name(&[vec![der(TAG_SEQUENCE, &[oid(CN)].concat())]]),
            name(&[vec![der(
                TAG_SEQUENCE,
                &[oid(CN), utf8("a"), utf8("b")].concat(),
            )]]),
            name(&[vec![ava(CN, vec![0x1f, 0x01, 0x00])]]),
        ];
        for bytes in bad {
            assert!(distinguished_name(&bytes).is_err(), "{bytes:02x?}");
        }
        assert!(subject_name(b"not a certificate").is_err());
    }

    // ---- mapping rules ----

    fn rules(text: &str) -> PrincipalMapper {
        PrincipalMapper::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn kafka_docs_rules() {
        let mapper = rules(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,\
             RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,DEFAULT",
        );
        let map = |n: &str| mapper.map(n).expect("mapped");
        assert_eq!(map("CN=Duke,OU=ServiceUsers,O=Org,C=US"), "Duke");
        assert_eq!(map("CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US"), "duke@sme");
        assert_eq!(
            map("CN=alice,OU=Eng,O=Acme,C=US"),
            "CN=alice,OU=Eng,O=Acme,C=US"
        );
    }

    #[test]
    fn kafka_mapper_test_vectors() {
        let mapper = rules(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, \
             RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L, \
             RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U, \
             RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U, \
             DEFAULT",
        );
        let map = |n: &str| mapper.map(n).expect("mapped");
        assert_eq!(map("CN=Duke,OU=ServiceUsers,O=Org,C=US"), "duke");
        assert_eq!(map("CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US"), "duke@sme");
        assert_eq!(map("cn=duke,ou=sme,dc=mycp,dc=com"), "DUKE@SME");
        assert_eq!(map("cN=duke,OU=JavaSoft,O=Sun Microsystems"), "DUKE");
        assert_eq!(
            map("OU=JavaSoft,O=Sun Microsystems,C=US"),
            "OU=JavaSoft,O=Sun Microsystems,C=US"
        );

        let mapper = rules(r"RULE:^CN=((\\, *|\w)+)(,.*|$)/$1/,DEFAULT");
        assert_eq!(
            mapper
                .map(r"CN=Tkac\, Adam,OU=ITZ,DC=geodis,DC=cz")
                .expect("mapped"),
            r"Tkac\, Adam"
        );
    }

    #[test]
    fn kafka_valid_and_invalid_rules() {
        for ok in [
            "DEFAULT",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, DEFAULT",
            "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/",
            "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L",
            "RULE:^cn=(.?),ou=(.?),dc=(.?),dc=(.?)$/$1@$2/U",
            "RULE:^CN=([^,ADEFLTU,]+)(,.*|$)/$1/",
            "RULE:^CN=([^,DEFAULT,]+)(,.*|$)/$1/",
        ] {
            rules(ok);
        }
        for bad in [
            "default",
            "DEFAUL",
            "DEFAULT/L",
            "DEFAULT/U",
            "RULE:CN=(.*?),OU=ServiceUsers.*/$1",
            "rule:^CN=(.*?),OU=ServiceUsers.*$/$1/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L/U",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/L",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/U",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/LU",
            // Not in Kafka's tests, but errors there too.
            "DEFAULT DEFAULT",
            "RULE:a/b/ L",
            "RULE:(unclosed/x/",
            "RULE:a\\",
        ] {
            assert!(
                matches!(PrincipalMapper::parse(bad), Err(Error::InvalidRule(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn kafka_rule_splitting_vectors() {
        let cases = [
            ("", "[]"),
            ("DEFAULT", "[DEFAULT]"),
            ("RULE://", "[RULE:/]"),
            ("RULE:/.*/", "[RULE:/.*]"),
            ("RULE:/.*/L", "[RULE:/.*/L]"),
            ("RULE://,DEFAULT", "[RULE:/, DEFAULT]"),
            ("  RULE:// ,  DEFAULT  ", "[RULE:/, DEFAULT]"),
            (
                "  RULE:   /     / ,  DEFAULT  ",
                "[RULE:   /     , DEFAULT]",
            ),
            (
                "  RULE:  /     /U   ,DEFAULT  ",
                "[RULE:  /     /U, DEFAULT]",
            ),
            (
                "  RULE:([A-Z]*)/$1/U   ,RULE:([a-z]+)/$1/,   DEFAULT  ",
                "[RULE:([A-Z]*)/$1/U, RULE:([a-z]+)/$1, DEFAULT]",
            ),
            (",   , , ,      , , ,   ", "[]"),
            (",,RULE://,,,DEFAULT,,", "[RULE:/, DEFAULT]"),
            (
                ",  , RULE: /   /    ,,,   DEFAULT, ,   ",
                "[RULE: /   , DEFAULT]",
            ),
            (
                "     ,  , RULE:   /  /U    ,,  ,DEFAULT, ,",
                "[RULE:   /  /U, DEFAULT]",
            ),
            (r"RULE:\/\\\(\)\n\t/\/\//", r"[RULE:\/\\\(\)\n\t/\/\/]"),
            (
                r"RULE:\**\/+/*/L,RULE:\/*\**/**/",
                r"[RULE:\**\/+/*/L, RULE:\/*\**/**]",
            ),
            (
                r"RULE:,RULE:,/,RULE:,\//U,RULE:,/RULE:,/,RULE:,RULE:,/L,RULE:,/L,RULE:, DEFAULT, /DEFAULT/,DEFAULT",
                r"[RULE:,RULE:,/,RULE:,\//U, RULE:,/RULE:,, RULE:,RULE:,/L,RULE:,/L, RULE:, DEFAULT, /DEFAULT, DEFAULT]",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(rules(input).to_string(), expected, "{input}");
        }
    }

    #[test]
    fn escaped_slash_and_backslash_in_rules() {
        let mapper = rules(r"RULE:^CN=([^\/]*)\/(.*)$/$2\/$1/");
        assert_eq!(mapper.map("CN=a/b").expect("mapped"), "b/a");
        let mapper = rules(r"RULE:\/\\\(\)\n\t/\/\//");
        assert_eq!(mapper.map("/\\()\n\t").expect("mapped"), "//");
    }

    #[test]
    fn no_matching_rule_is_an_error() {
        let mapper = rules("RULE:^CN=(.*)$/$1/");
        assert!(matches!(
            mapper.map("OU=x"),
            Err(Error::AuthenticationFailed(_))
        ));
        assert!(PrincipalMapper::parse("")
            .expect("empty")
            .map("CN=a")
            .is_err());
        assert_eq!(
            PrincipalMapper::default_rules()
                .map("CN=a,O=b")
                .expect("default"),
            "CN=a,O=b"
        );
        assert_eq!(PrincipalMapper::default().to_string(), "[DEFAULT]");
    }

    #[test]
    fn pattern_must_match_the_whole_name() {
        // Java's matches(): `alice` alone does not match `CN=alice`.
        let mapper = rules("RULE:alice/x/,DEFAULT");
        assert_eq!(mapper.map("CN=alice").expect("mapped"), "CN=alice");
        // An alternative that reaches the end makes the rule apply (a|ab on "ab"), yet the
        // replacement, like Java's replaceAll, works on the leftmost-first match `a`.
        let mapper = rules("RULE:(a|ab)/[$1]/");
        assert_eq!(mapper.map("ab").expect("mapped"), "[a]b");
    }

    #[test]
    fn replace_all_follows_java() {
        // Unanchored patterns replace every match, including Java's empty match at the end.
        assert_eq!(rules("RULE:.*/x/").map("abc").expect("m"), "xx");
        assert_eq!(rules("RULE:(.*)/<$1>/").map("abc").expect("m"), "<abc><>");
        assert_eq!(rules("RULE:^(.*)$/<$1>/").map("abc").expect("m"), "<abc>");
        assert_eq!(rules("RULE:(a*)b?/[$1]/").map("aab").expect("m"), "[aa][]");
        assert_eq!(rules("RULE:x*/-/").map("").expect("m"), "-");
    }

    #[test]
    fn replacement_references_follow_kafka_and_java() {
        let map = |r: &str, n: &str| rules(r).map(n).expect("mapped");
        // Past the last group: literal (Kafka); longest valid number (Java).
        assert_eq!(map("RULE:^(a)(b)(c)$/$1@$4/", "abc"), "a@$4");
        assert_eq!(map("RULE:^(a)(b)(c)$/$12/", "abc"), "a2");
        assert_eq!(map("RULE:^(a)(b)(c)$/$31/", "abc"), "c1");
        assert_eq!(map("RULE:^(a)$/$0-$1/", "a"), "a-a");
        assert_eq!(map("RULE:^(a)(b)$/$01/", "ab"), "a");
        assert_eq!(map("RULE:^(a)|(b)$/[$2]/", "a"), "[]");
        assert_eq!(map(r"RULE:^(a)$/\$1 \\ $1/", "a"), r"$1 \ a");
        assert_eq!(map("RULE:^(?<user>[a-z]+)@.*$/${user}/U", "bob@x"), "BOB");
        assert_eq!(map("RULE:^a$/$0$0/", "a"), "aa");
        for bad in [
            "RULE:^a$/$1/",
            "RULE:^(a)$/$/",
            "RULE:^(a)$/$x/",
            "RULE:^(a)$/${nope}/",
            "RULE:^(a)$/${user/",
        ] {
            assert!(
                matches!(PrincipalMapper::parse(bad), Err(Error::InvalidRule(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn java_escapes_keep_their_java_meaning() {
        // \w and \d are ASCII in Java.
        assert!(rules(r"RULE:^CN=\w+$/x/").map("CN=Zoë").is_err());
        assert_eq!(rules(r"RULE:^CN=\w+$/x/").map("CN=Zoe_1").expect("m"), "x");
        assert!(rules(r"RULE:^\d+$/x/").map("٣").is_err());
        assert_eq!(rules(r"RULE:^[\d\s]+$/x/").map("1 2").expect("m"), "x");
        assert_eq!(rules(r"RULE:^[^\W]+$/x/").map("ab").expect("m"), "x");
        assert_eq!(rules(r"RULE:^\S\D$/x/").map("é!").expect("m"), "x");
        // \< and \> are literal angle brackets in Java.
        assert_eq!(rules(r"RULE:^\<(.*)\>$/$1/").map("<a>").expect("m"), "a");
        // Escaped punctuation used in DN patterns.
        assert_eq!(
            rules(r"RULE:^CN=a\,b\=c$/ok/").map("CN=a,b=c").expect("m"),
            "ok"
        );
        // Inline flags and a trailing comment in (?x) mode.
        assert_eq!(rules("RULE:(?i)^cn=(.*)$/$1/").map("CN=a").expect("m"), "a");
        assert_eq!(
            rules("RULE:(?x) ^ CN= (.*) $ # tail/$1/")
                .map("CN=a")
                .expect("m"),
            "a"
        );
    }

    #[test]
    fn subject_then_mapping_end_to_end() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "US");
        dn.push(DnType::OrganizationName, "Acme");
        dn.push(DnType::OrganizationalUnitName, "ServiceUsers");
        dn.push(DnType::CommonName, "Writer, Inc");
        let subject = subject_name(&cert_with(dn)).expect("subject");
        assert_eq!(subject, r"CN=Writer\, Inc,OU=ServiceUsers,O=Acme,C=US");
        let mapper = rules(r"RULE:^CN=((\\,|[^,])*),OU=ServiceUsers.*$/$1/L,DEFAULT");
        assert_eq!(mapper.map(&subject).expect("mapped"), r"writer\, inc");
    }

    // ---- no panics on any input ----

    fn arb_value() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::sample::select(vec![0x0cu8, 0x13, 0x14, 0x16, 0x1b, 0x1e, 0x1c, 0x02, 0x04]),
            prop::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(tag, bytes)| der(tag, &bytes))
    }

    fn arb_oid() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::sample::select(vec![CN, OU, O, C, &[0, 9, 2342, 19200300, 100, 1, 25][..]])
                .prop_map(oid),
            prop::collection::vec(any::<u8>(), 0..20).prop_map(|c| der(TAG_OID, &c)),
        ]
    }

    proptest! {
        #[test]
        fn subject_parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = subject_name(&bytes);
            let _ = distinguished_name(&bytes);
        }

        #[test]
        fn structured_names_never_panic(
            rdns in prop::collection::vec(
                prop::collection::vec((arb_oid(), arb_value()), 0..3), 0..5)
        ) {
            let rdns: Vec<Vec<Vec<u8>>> = rdns
                .into_iter()
                .map(|avas| {
                    avas.into_iter()
                        .map(|(o, v)| der(TAG_SEQUENCE, &[o, v].concat()))
                        .collect()
                })
                .collect();
            let _ = distinguished_name(&name(&rdns));
        }

        #[test]
        fn rule_parser_and_mapper_never_panic(text in ".{0,80}", subject in ".{0,80}") {
            if let Ok(mapper) = PrincipalMapper::parse(&text) {
                let _ = mapper.map(&subject);
                let _ = mapper.to_string();
            }
        }

        #[test]
        fn rule_shaped_input_never_panics(
            pattern in r"[a-c(){}\[\]^$.*+?|\\,=/dws0-9<>#x ]{0,24}",
            replacement in r"[a-c$\\{}0-9/@ ]{0,12}",
            flag in "[LUX]?",
            subject in r"[a-c,=\\ ]{0,24}",
        ) {
            let text = format!("RULE:{pattern}/{replacement}/{flag},DEFAULT");
            if let Ok(mapper) = PrincipalMapper::parse(&text) {
                let _ = mapper.map(&subject);
            }
        }
    }
}
