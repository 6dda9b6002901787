//! Parsing client commands: the verb, MAIL and RCPT paths and their
//! parameters (RFC 5321 §4.1, RFC 1870, RFC 6152, RFC 6531, RFC 3461,
//! RFC 8689). Pure functions over one command line without its CRLF.

use crate::envelope::{BodyType, Notify, Ret};
use crate::smtp::command::is_xtext;
use crate::submission::address::normalise_domain;

/// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;

/// Longest MAIL command: the base limit raised by each extension we offer
/// that adds MAIL parameters: SIZE (RFC 1870 §3: 26), BODY (14), SMTPUTF8
/// (RFC 6531 §3.4: 10), DSN RET and ENVID (RFC 3461 §4: 118), REQUIRETLS
/// (RFC 8689 §2 item 5: 11) and AUTH= (RFC 4954 §5: 500).
pub const MAX_MAIL_LINE: usize = MAX_COMMAND_LINE + 26 + 14 + 10 + 118 + 11 + 500;

/// Longest RCPT command: NOTIFY and ORCPT add 500 (RFC 3461 §4).
pub const MAX_RCPT_LINE: usize = MAX_COMMAND_LINE + 500;

/// Longest AUTH line, with its initial response (RFC 4954 §4: 12288).
pub const MAX_AUTH_LINE: usize = 12288;

/// The limit for a line starting with `verb` (upper case).
pub fn line_limit(verb: &str) -> usize {
    match verb {
        "MAIL" => MAX_MAIL_LINE,
        "RCPT" => MAX_RCPT_LINE,
        "AUTH" => MAX_AUTH_LINE,
        _ => MAX_COMMAND_LINE,
    }
}

/// Splits a line into the upper-cased verb and the rest (leading blanks
/// removed).
pub fn split_verb(line: &str) -> (String, &str) {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    (verb.to_ascii_uppercase(), rest.trim_start())
}

/// Why a path or parameter was refused; the reply to send is chosen from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    /// The command is malformed (501 5.5.4 / 5.5.2).
    #[error("{0}")]
    Syntax(String),
    /// The address is malformed (553 5.1.3 / 501 5.1.7).
    #[error("{0}")]
    BadAddress(String),
    /// A parameter we do not implement (555 5.5.4).
    #[error("{0}")]
    Unknown(String),
}

/// A path from MAIL FROM or RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// `local@domain` with the domain in A-labels; empty for `<>`; a bare
    /// local part when the client gave no domain.
    pub address: String,
    /// The local part has non-ASCII characters (needs SMTPUTF8).
    pub utf8: bool,
    /// No domain was given.
    pub bare: bool,
}

/// Parses `FROM:<path> params` or `TO:<path> params`; `keyword` is `FROM`
/// or `TO`. Returns the path and the parameter words.
pub fn parse_path_and_params<'a>(
    rest: &'a str,
    keyword: &str,
) -> Result<(Path, Vec<&'a str>), ParamError> {
    let syntax = || ParamError::Syntax(format!("syntax: {keyword}:<address> [parameters]"));
    let colon = rest.find(':').ok_or_else(syntax)?;
    if !rest[..colon].trim().eq_ignore_ascii_case(keyword) {
        return Err(syntax());
    }
    let after = rest[colon + 1..].trim_start();
    if !after.starts_with('<') {
        return Err(syntax());
    }
    let close = closing_bracket(after).ok_or_else(syntax)?;
    let inner = &after[1..close];
    let params: Vec<&str> = after[close + 1..].split_ascii_whitespace().collect();
    if !after[close + 1..].is_empty() && !after[close + 1..].starts_with(' ') {
        return Err(syntax());
    }
    Ok((parse_path(inner)?, params))
}

/// The index of the `>` that closes the path, skipping quoted strings.
fn closing_bracket(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// Parses the inside of `<...>` (RFC 5321 §4.1.2): an optional source
/// route, which is ignored (§3.6.1), then `local@domain`.
fn parse_path(inner: &str) -> Result<Path, ParamError> {
    if inner.is_empty() {
        return Ok(Path {
            address: String::new(),
            utf8: false,
            bare: false,
        });
    }
    let mailbox = match inner.strip_prefix('@') {
        Some(route) => route
            .split_once(':')
            .map(|(_, m)| m)
            .ok_or_else(|| ParamError::BadAddress(format!("bad source route in <{inner}>")))?,
        None => inner,
    };
    let bad = |why: &str| ParamError::BadAddress(format!("invalid address <{mailbox}>: {why}"));
    if mailbox
        .chars()
        .any(|c| c.is_control() || c == ' ' && !mailbox.starts_with('"'))
    {
        return Err(bad("control characters or spaces"));
    }
    let (local, domain) = match mailbox.rfind('@') {
        Some(at) if !mailbox[at..].contains('"') => (&mailbox[..at], Some(&mailbox[at + 1..])),
        _ => (mailbox, None),
    };
    check_local(local).map_err(bad)?;
    let utf8 = !local.is_ascii();
    let Some(domain) = domain else {
        return Ok(Path {
            address: local.to_owned(),
            utf8,
            bare: true,
        });
    };
    let domain = normalise_domain(mailbox, domain).map_err(|e| bad(&e.reason))?;
    Ok(Path {
        address: format!("{local}@{domain}"),
        utf8,
        bare: false,
    })
}

/// A local part: dot-atom or quoted string (RFC 5321 §4.1.2), UTF-8
/// allowed (RFC 6531 §3.3).
fn check_local(local: &str) -> Result<(), &'static str> {
    if local.is_empty() {
        return Err("empty local part");
    }
    if local.len() > 64 * 4 {
        return Err("local part too long");
    }
    if let Some(q) = local.strip_prefix('"') {
        return match q.strip_suffix('"') {
            Some(body) if !body.is_empty() || q.len() == 1 => Ok(()),
            _ => Err("unbalanced quotes"),
        };
    }
    let atom_char =
        |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    if local
        .split('.')
        .all(|a| !a.is_empty() && a.chars().all(atom_char))
    {
        Ok(())
    } else {
        Err("not a dot-atom or quoted string")
    }
}

/// What MAIL FROM asked for besides the path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=` (RFC 1870).
    pub size: Option<u64>,
    /// `BODY=` (RFC 6152).
    pub body: Option<BodyType>,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `REQUIRETLS` (RFC 8689 §4.1).
    pub requiretls: bool,
    /// `RET=` (RFC 3461 §4.3).
    pub ret: Option<Ret>,
    /// `ENVID=`, decoded from xtext (RFC 3461 §4.4).
    pub envid: Option<String>,
}

/// Parses MAIL parameters. Keywords are case-insensitive; a repeated one
/// is a syntax error (RFC 3461 §4.5 for RET and ENVID).
pub fn parse_mail_params<'a>(words: &[&'a str]) -> Result<MailParams, ParamError> {
    let mut p = MailParams::default();
    let mut seen: Vec<String> = Vec::new();
    for word in words {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
            None => (word.to_ascii_uppercase(), None),
        };
        if seen.contains(&key) {
            return Err(ParamError::Syntax(format!("{key} given twice")));
        }
        seen.push(key.clone());
        let need = |v: Option<&'a str>| -> Result<&'a str, ParamError> {
            v.filter(|v| !v.is_empty())
                .ok_or_else(|| ParamError::Syntax(format!("{key} needs a value")))
        };
        match key.as_str() {
            "SIZE" => {
                let v = need(value)?;
                p.size = Some(v.parse().map_err(|_| {
                    ParamError::Syntax(format!("SIZE={v}: expected a number of octets"))
                })?);
            }
            "BODY" => {
                p.body = Some(match need(value)?.to_ascii_uppercase().as_str() {
                    "7BIT" => BodyType::SevenBit,
                    "8BITMIME" => BodyType::EightBitMime,
                    other => {
                        return Err(ParamError::Unknown(format!("BODY={other} not supported")))
                    }
                });
            }
            "SMTPUTF8" if value.is_none() => p.smtputf8 = true,
            "REQUIRETLS" if value.is_none() => p.requiretls = true,
            "RET" => {
                p.ret = Some(match need(value)?.to_ascii_uppercase().as_str() {
                    "FULL" => Ret::Full,
                    "HDRS" => Ret::Hdrs,
                    other => return Err(ParamError::Syntax(format!("RET={other}: FULL or HDRS"))),
                });
            }
            "ENVID" => {
                let v = need(value)?;
                let decoded = xtext_decode(v)
                    .filter(|d| d.len() <= 100 && d.bytes().all(|b| (b' '..=b'~').contains(&b)))
                    .ok_or_else(|| {
                        ParamError::Syntax(
                            "ENVID must be xtext of at most 100 printable characters".into(),
                        )
                    })?;
                p.envid = Some(decoded);
            }
            // RFC 4954 §5: accepted and not passed on; we do not relay
            // the submitter's identity.
            "AUTH" => {}
            _ => {
                return Err(ParamError::Unknown(format!(
                    "MAIL parameter {word} not supported"
                )))
            }
        }
    }
    Ok(p)
}

/// What RCPT TO asked for besides the path (RFC 3461 §4.1, §4.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// `NOTIFY=`.
    pub notify: Option<Vec<Notify>>,
    /// `ORCPT=` exactly as received (`addr-type;xtext`).
    pub orcpt: Option<String>,
}

/// Parses RCPT parameters.
pub fn parse_rcpt_params(words: &[&str]) -> Result<RcptParams, ParamError> {
    let mut p = RcptParams::default();
    for word in words {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        match key.to_ascii_uppercase().as_str() {
            "NOTIFY" if p.notify.is_none() => p.notify = Some(parse_notify(value)?),
            "ORCPT" if p.orcpt.is_none() => {
                let ok = value.len() <= 500
                    && value
                        .split_once(';')
                        .is_some_and(|(t, x)| is_atom(t) && !x.is_empty() && is_xtext(x));
                if !ok {
                    return Err(ParamError::Syntax(
                        "ORCPT must be addr-type;xtext, at most 500 characters".into(),
                    ));
                }
                p.orcpt = Some(value.to_owned());
            }
            "NOTIFY" | "ORCPT" => {
                return Err(ParamError::Syntax(format!("{key} given twice")));
            }
            _ => {
                return Err(ParamError::Unknown(format!(
                    "RCPT parameter {word} not supported"
                )))
            }
        }
    }
    Ok(p)
}

fn is_atom(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `NEVER` alone, or a list of SUCCESS, FAILURE, DELAY (RFC 3461 §4.1).
fn parse_notify(value: &str) -> Result<Vec<Notify>, ParamError> {
    let bad = || ParamError::Syntax(format!("NOTIFY={value}: NEVER, or SUCCESS,FAILURE,DELAY"));
    let mut list = Vec::new();
    for word in value.split(',') {
        let n = match word.to_ascii_uppercase().as_str() {
            "NEVER" => Notify::Never,
            "SUCCESS" => Notify::Success,
            "FAILURE" => Notify::Failure,
            "DELAY" => Notify::Delay,
            _ => return Err(bad()),
        };
        if list.contains(&n) {
            return Err(bad());
        }
        list.push(n);
    }
    if list.contains(&Notify::Never) && list.len() > 1 {
        return Err(bad());
    }
    Ok(list)
}

/// Decodes xtext (RFC 3461 §4); `None` when it is not valid xtext or not
/// UTF-8.
pub fn xtext_decode(value: &str) -> Option<String> {
    if !is_xtext(value) {
        return None;
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'+' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path<'a>(rest: &'a str, kw: &str) -> Result<(Path, Vec<&'a str>), ParamError> {
        parse_path_and_params(rest, kw)
    }

    #[test]
    fn paths_rfc5321_section_4_1_2() {
        let (p, params) = path("FROM:<a@Example.ORG> SIZE=10 BODY=8BITMIME", "FROM").unwrap();
        assert_eq!(p.address, "a@example.org");
        assert_eq!(params, ["SIZE=10", "BODY=8BITMIME"]);
        let (p, _) = path("from: <>", "FROM").unwrap();
        assert_eq!(p.address, "");
        let (p, _) = path("TO:<@relay.example:b@bücher.example>", "TO").unwrap();
        assert_eq!(p.address, "b@xn--bcher-kva.example");
        let (p, _) = path("TO:<\"a >b\"@example.org>", "TO").unwrap();
        assert_eq!(p.address, "\"a >b\"@example.org");
        let (p, _) = path("TO:<jürgen@example.org>", "TO").unwrap();
        assert!(p.utf8);
        let (p, _) = path("TO:<postmaster>", "TO").unwrap();
        assert!(p.bare);
        for bad in [
            "TO:a@example.org",
            "TO:<a@example.org",
            "FROM:<a@example.org>",
            "TO:<a b@example.org>",
            "TO:<a@exa mple.org>",
            "TO:<a..b@example.org>",
            "TO:<a@example.org>SIZE=1",
            "TO:<a@-bad-.example>x",
        ] {
            assert!(path(bad, "TO").is_err(), "{bad}");
        }
    }

    #[test]
    fn mail_parameters() {
        let p = parse_mail_params(&[
            "size=100",
            "BODY=8bitmime",
            "SMTPUTF8",
            "REQUIRETLS",
            "RET=HDRS",
            "ENVID=QQ+2B1",
            "AUTH=<>",
        ])
        .unwrap();
        assert_eq!(p.size, Some(100));
        assert_eq!(p.body, Some(BodyType::EightBitMime));
        assert!(p.smtputf8 && p.requiretls);
        assert_eq!(p.ret, Some(Ret::Hdrs));
        assert_eq!(p.envid.as_deref(), Some("QQ+1"));
        assert!(matches!(
            parse_mail_params(&["BODY=BINARYMIME"]),
            Err(ParamError::Unknown(_))
        ));
        assert!(matches!(
            parse_mail_params(&["X=1"]),
            Err(ParamError::Unknown(_))
        ));
        // RFC 3461 §4.5: a repeated parameter is an error.
        assert!(matches!(
            parse_mail_params(&["RET=FULL", "RET=HDRS"]),
            Err(ParamError::Syntax(_))
        ));
        assert!(parse_mail_params(&["SIZE=x"]).is_err());
        assert!(parse_mail_params(&["ENVID=a=b"]).is_err());
    }

    #[test]
    fn rcpt_parameters_rfc3461_section_4() {
        let p =
            parse_rcpt_params(&["NOTIFY=SUCCESS,delay", "ORCPT=rfc822;a+2Bb@example.org"]).unwrap();
        assert_eq!(p.notify, Some(vec![Notify::Success, Notify::Delay]));
        assert_eq!(p.orcpt.as_deref(), Some("rfc822;a+2Bb@example.org"));
        for bad in [
            "NOTIFY=NEVER,SUCCESS",
            "NOTIFY=SOMETIMES",
            "ORCPT=a@example.org",
            "ORCPT=rfc822;a=b",
        ] {
            assert!(parse_rcpt_params(&[bad]).is_err(), "{bad}");
        }
        assert!(parse_rcpt_params(&["NOTIFY=NEVER", "NOTIFY=NEVER"]).is_err());
    }

    #[test]
    fn xtext_round_trip() {
        assert_eq!(xtext_decode("a+2Bb+3D").as_deref(), Some("a+b="));
        assert_eq!(xtext_decode("a+2"), None);
    }

    #[test]
    fn line_limits_rfc5321_section_4_5_3_1() {
        assert_eq!(line_limit("NOOP"), 512);
        assert!(line_limit("MAIL") >= 512 + 11);
        assert_eq!(line_limit("RCPT"), 1012);
    }
}
