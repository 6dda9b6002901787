//! Addresses in header fields and on the command line (RFC 5322 §3.4).
//!
//! An address list may hold display names, quoted strings, comments
//! (nested), angle addresses with obsolete source routes, groups
//! (`undisclosed-recipients:;`), RFC 2047 encoded words (atoms, as far as
//! the syntax goes), UTF-8 (RFC 6532) and bare local names such as cron's
//! `root`, which the caller qualifies.
//!
//! This parser is our own: mail-parser's address parser is built to accept
//! anything and reports neither errors nor positions, but submission must
//! refuse a malformed address by name (nothing is half-queued) and must
//! qualify bare names inside `From:`, `To:` and `Cc:` without rewriting the
//! rest of the field.

use std::ops::Range;

/// One address found in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAddress {
    /// The local part as written (quoted strings keep their quotes).
    pub local: String,
    /// The domain as written, or `None` for a bare local name.
    pub domain: Option<String>,
    /// Where the addr-spec is in the parsed text.
    pub span: Range<usize>,
}

impl ParsedAddress {
    /// True for `<>`, the null reverse-path.
    pub fn is_null(&self) -> bool {
        self.local.is_empty() && self.domain.is_none()
    }
}

/// An address list that does not parse, or an address that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {text:?}: {reason}")]
pub struct AddressError {
    /// The offending text.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A run of atom characters and dots.
    Word,
    /// `"..."`, quotes included.
    Quoted,
    /// `[...]`, brackets included.
    Literal,
    /// One of `<>:;@,`.
    Special(u8),
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

fn is_word_byte(b: u8) -> bool {
    !(b.is_ascii_whitespace()
        || b.is_ascii_control()
        || matches!(
            b,
            b'(' | b')' | b'<' | b'>' | b'[' | b']' | b':' | b';' | b'@' | b'\\' | b',' | b'"'
        ))
}

fn fail(text: &str, reason: impl Into<String>) -> AddressError {
    AddressError {
        text: text.trim().to_owned(),
        reason: reason.into(),
    }
}

/// Splits `text` into tokens; comments and white space (folding included)
/// are dropped.
fn tokenize(text: &str) -> Result<Vec<Token>, AddressError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' => {
                let mut depth = 0usize;
                loop {
                    match b.get(i) {
                        None => return Err(fail(text, "unterminated comment")),
                        Some(b'\\') => i += 1,
                        Some(b'(') => depth += 1,
                        Some(b')') => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        Some(_) => {}
                    }
                    i += 1;
                }
            }
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(fail(text, "unterminated quoted string")),
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                out.push(Token {
                    kind: Kind::Quoted,
                    start,
                    end: i,
                });
            }
            b'[' => {
                let start = i;
                while i < b.len() && b[i] != b']' {
                    if b[i] == b'[' && i > start || b[i] == b'\\' {
                        return Err(fail(text, "bad domain literal"));
                    }
                    i += 1;
                }
                if i == b.len() {
                    return Err(fail(text, "unterminated domain literal"));
                }
                i += 1;
                out.push(Token {
                    kind: Kind::Literal,
                    start,
                    end: i,
                });
            }
            b'<' | b'>' | b':' | b';' | b'@' | b',' => {
                out.push(Token {
                    kind: Kind::Special(c),
                    start: i,
                    end: i + 1,
                });
                i += 1;
            }
            _ if is_word_byte(c) => {
                let start = i;
                while i < b.len() && is_word_byte(b[i]) {
                    i += 1;
                }
                out.push(Token {
                    kind: Kind::Word,
                    start,
                    end: i,
                });
            }
            _ => {
                return Err(fail(
                    text,
                    format!("unexpected character {:?}", char::from(c)),
                ))
            }
        }
    }
    Ok(out)
}

/// Parses an address list. Empty members (`a@x,,b@y`) and empty groups
/// are allowed and yield nothing. `allow_null` accepts `<>`.
pub fn parse_list(text: &str, allow_null: bool) -> Result<Vec<ParsedAddress>, AddressError> {
    let tokens = tokenize(text)?;
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_group = false;
    while i < tokens.len() {
        let (end, stop) = member_end(&tokens, i);
        let member = &tokens[i..end];
        match stop {
            Some(b':') if !in_group && is_phrase(member) => {
                in_group = true;
            }
            Some(b':') => return Err(fail(text, "unexpected \":\"")),
            Some(b';') if in_group => {
                out.extend(parse_mailbox(text, member, allow_null)?);
                in_group = false;
            }
            Some(b';') => return Err(fail(text, "\";\" outside a group")),
            _ => out.extend(parse_mailbox(text, member, allow_null)?),
        }
        i = end + 1;
    }
    Ok(out)
}

/// Where the list member starting at `from` ends: the index of the
/// separating `,`, `:` or `;` (not inside angle brackets) and which one.
fn member_end(tokens: &[Token], from: usize) -> (usize, Option<u8>) {
    let mut in_angle = false;
    for (at, t) in tokens.iter().enumerate().skip(from) {
        match t.kind {
            Kind::Special(b'<') => in_angle = true,
            Kind::Special(b'>') => in_angle = false,
            Kind::Special(c @ (b',' | b':' | b';')) if !in_angle => return (at, Some(c)),
            _ => {}
        }
    }
    (tokens.len(), None)
}

fn is_phrase(tokens: &[Token]) -> bool {
    !tokens.is_empty()
        && tokens
            .iter()
            .all(|t| matches!(t.kind, Kind::Word | Kind::Quoted))
}

/// One mailbox: `name <addr>`, `<addr>`, `addr` or nothing.
fn parse_mailbox(
    text: &str,
    tokens: &[Token],
    allow_null: bool,
) -> Result<Option<ParsedAddress>, AddressError> {
    let Some(first) = tokens.first() else {
        return Ok(None);
    };
    let whole = &text[first.start..tokens[tokens.len() - 1].end];
    let open = tokens.iter().position(|t| t.kind == Kind::Special(b'<'));
    let Some(open) = open else {
        return parse_addr_spec(text, whole, tokens).map(Some);
    };
    let close = tokens
        .iter()
        .position(|t| t.kind == Kind::Special(b'>'))
        .filter(|&c| c > open)
        .ok_or_else(|| fail(whole, "\"<\" without \">\""))?;
    if close + 1 != tokens.len() {
        return Err(fail(whole, "text after \">\""));
    }
    if open > 0 && !is_phrase(&tokens[..open]) {
        return Err(fail(whole, "the display name is not a phrase"));
    }
    let mut inner = &tokens[open + 1..close];
    if inner.is_empty() {
        if allow_null {
            return Ok(Some(ParsedAddress {
                local: String::new(),
                domain: None,
                span: tokens[open].start..tokens[close].end,
            }));
        }
        return Err(fail(whole, "empty address <>"));
    }
    // An obsolete source route (RFC 5322 §4.4) is dropped: `<@a,@b:x@y>`.
    if inner[0].kind == Kind::Special(b'@') {
        let colon = inner
            .iter()
            .position(|t| t.kind == Kind::Special(b':'))
            .ok_or_else(|| fail(whole, "bad source route"))?;
        inner = &inner[colon + 1..];
    }
    parse_addr_spec(text, whole, inner).map(Some)
}

fn parse_addr_spec(
    text: &str,
    whole: &str,
    tokens: &[Token],
) -> Result<ParsedAddress, AddressError> {
    if tokens.is_empty() {
        return Err(fail(whole, "no address"));
    }
    let at = tokens.iter().position(|t| t.kind == Kind::Special(b'@'));
    let (local_toks, domain_toks) = match at {
        Some(at) => (&tokens[..at], Some(&tokens[at + 1..])),
        None => (tokens, None),
    };
    if local_toks.is_empty() {
        return Err(fail(whole, "no local part before \"@\""));
    }
    if !local_toks
        .iter()
        .all(|t| matches!(t.kind, Kind::Word | Kind::Quoted))
    {
        return Err(fail(whole, "not an address"));
    }
    // Words of a local part are joined by dots (RFC 5322 §3.4.1, with the
    // obsolete white space around them): "john doe@x" is not an address.
    let joined = local_toks.windows(2).all(|w| {
        text[w[0].start..w[0].end].ends_with('.') || text[w[1].start..w[1].end].starts_with('.')
    });
    if !joined {
        return Err(fail(whole, "white space inside the local part"));
    }
    let local: String = local_toks.iter().map(|t| &text[t.start..t.end]).collect();
    check_local(whole, &local)?;
    let domain = match domain_toks {
        None => None,
        Some([t]) if matches!(t.kind, Kind::Word | Kind::Literal) => {
            Some(text[t.start..t.end].to_owned())
        }
        Some([]) => return Err(fail(whole, "no domain after \"@\"")),
        Some(_) => return Err(fail(whole, "the domain is not a domain name")),
    };
    let last = tokens[tokens.len() - 1];
    Ok(ParsedAddress {
        local,
        domain,
        span: tokens[0].start..last.end,
    })
}

/// RFC 5322 §3.4.1 local part: a dot-atom (UTF-8 allowed, RFC 6531 §3.3)
/// or a quoted string; the obsolete mix of both is accepted.
fn check_local(whole: &str, local: &str) -> Result<(), AddressError> {
    if local.len() > 64 && local.is_ascii() || local.len() > 256 {
        return Err(fail(
            whole,
            "the local part is too long (RFC 5321 §4.5.3.1.1)",
        ));
    }
    if local.starts_with('"') {
        return Ok(());
    }
    let bad_dots = local.starts_with('.') || local.ends_with('.') || local.contains("..");
    if bad_dots {
        return Err(fail(whole, "misplaced \".\" in the local part"));
    }
    let atext = |c: char| {
        !c.is_ascii() || c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.\"".contains(c)
    };
    if let Some(c) = local.chars().find(|&c| !atext(c)) {
        return Err(fail(whole, format!("{c:?} is not allowed in a local part")));
    }
    Ok(())
}

/// Normalises a domain as written in an address: A-labels, lower case,
/// no trailing dot (RFC 5890); address literals are kept after a check.
pub fn normalise_domain(whole: &str, domain: &str) -> Result<String, AddressError> {
    if let Some(inner) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let ok = match inner.strip_prefix("IPv6:") {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => inner.parse::<std::net::Ipv4Addr>().is_ok(),
        };
        if !ok {
            return Err(fail(whole, "bad address literal (RFC 5321 §4.1.3)"));
        }
        return Ok(domain.to_owned());
    }
    let trimmed = domain.strip_suffix('.').unwrap_or(domain);
    if trimmed.is_empty() || trimmed.starts_with('.') || trimmed.contains("..") {
        return Err(fail(whole, "bad domain name"));
    }
    idna::domain_to_ascii_strict(trimmed)
        .map_err(|_| fail(whole, format!("{domain:?} is not a valid domain name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(text: &str) -> Vec<(String, Option<String>)> {
        parse_list(text, false)
            .unwrap()
            .into_iter()
            .map(|a| (a.local, a.domain))
            .collect()
    }

    fn one(local: &str, domain: &str) -> (String, Option<String>) {
        (local.to_owned(), Some(domain.to_owned()))
    }

    #[test]
    fn display_names_quotes_and_comments() {
        assert_eq!(
            addrs(r#""Doe, John" <john@example.org>, jane@example.org (Jane (the) Doe)"#),
            [one("john", "example.org"), one("jane", "example.org")]
        );
        assert_eq!(
            addrs(r#"=?UTF-8?Q?J=C3=BCrgen?= <j@example.org>"#),
            [one("j", "example.org")]
        );
        assert_eq!(
            addrs(r#""quoted local"@example.org"#),
            [one("\"quoted local\"", "example.org")]
        );
    }

    #[test]
    fn folded_lists_and_empty_members() {
        assert_eq!(
            addrs("a@x.org,\r\n\tb@y.org,, "),
            [one("a", "x.org"), one("b", "y.org")]
        );
    }

    #[test]
    fn groups() {
        assert!(addrs("undisclosed-recipients:;").is_empty());
        assert!(addrs("undisclosed-recipients: ;").is_empty());
        assert_eq!(
            addrs("team: a@x.org, B <b@x.org>; c@y.org"),
            [one("a", "x.org"), one("b", "x.org"), one("c", "y.org")]
        );
    }

    #[test]
    fn bare_names_and_source_routes() {
        assert_eq!(addrs("root"), [("root".to_owned(), None)]);
        assert_eq!(
            addrs("\"(Cron Daemon)\" <root>"),
            [("root".to_owned(), None)]
        );
        assert_eq!(addrs("<@relay.org,@b.org:u@x.org>"), [one("u", "x.org")]);
    }

    #[test]
    fn utf8_addresses() {
        assert_eq!(
            addrs("Jörg <jörg@bücher.example>"),
            [one("jörg", "bücher.example")]
        );
    }

    #[test]
    fn spans_point_at_the_addr_spec() {
        let text = "Cron <root>, x@y.org";
        let list = parse_list(text, false).unwrap();
        assert_eq!(&text[list[0].span.clone()], "root");
        assert_eq!(&text[list[1].span.clone()], "x@y.org");
    }

    #[test]
    fn null_address_only_when_allowed() {
        assert!(parse_list("<>", true).unwrap()[0].is_null());
        assert!(parse_list("<>", false).is_err());
    }

    #[test]
    fn invalid_lists_are_errors() {
        for bad in [
            "a@@x.org",
            "john doe@x.org",
            "<a@x.org",
            "a@x.org>",
            "Name <a@x.org> trailing",
            "a@",
            "@x.org",
            "a..b@x.org",
            ".a@x.org",
            "\"unterminated@x.org",
            "(comment a@x.org",
            "a@x.org;",
            "g: a@x.org; h: b:c",
            "a@b c.org",
        ] {
            assert!(parse_list(bad, false).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn domains_become_a_labels() {
        assert_eq!(
            normalise_domain("", "Bücher.Example.").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(normalise_domain("", "[127.0.0.1]").unwrap(), "[127.0.0.1]");
        assert_eq!(normalise_domain("", "[IPv6:::1]").unwrap(), "[IPv6:::1]");
        assert!(normalise_domain("", "[300.1.1.1]").is_err());
        assert!(normalise_domain("", "under_score.org").is_err());
        assert!(normalise_domain("", "a..b").is_err());
    }
}
