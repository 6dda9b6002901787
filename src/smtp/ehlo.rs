//! Service extensions announced in an EHLO reply (RFC 5321 §4.1.1.1).
//!
//! Pure: turns a [`Reply`] into [`Capabilities`]. Keywords are
//! case-insensitive (RFC 5321 §2.4); every keyword line is also kept raw
//! (uppercased) so that later policy code can look for extensions this
//! module does not name.

use super::reply::Reply;

/// What the server announced in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// 8BITMIME (RFC 6152).
    pub eightbitmime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
    /// REQUIRETLS (RFC 8689).
    pub requiretls: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhancedstatuscodes: bool,
    /// CHUNKING (RFC 3030).
    pub chunking: bool,
    /// SIZE (RFC 1870): `Some(limit)` when announced, where 0 means the
    /// server has no fixed limit (RFC 1870 §4); `None` when not announced.
    pub size: Option<u64>,
    /// AUTH mechanisms (RFC 4954 §3), uppercased.
    pub auth: Vec<String>,
    /// Every keyword line after the greeting line, uppercased, with
    /// whitespace runs collapsed to one space.
    pub keywords: Vec<String>,
}

impl Capabilities {
    /// True when a keyword line starts with `keyword` (case-insensitive).
    pub fn has(&self, keyword: &str) -> bool {
        let keyword = keyword.to_ascii_uppercase();
        self.keywords
            .iter()
            .any(|line| line.split(' ').next() == Some(keyword.as_str()))
    }
}

/// Reads the capabilities from a positive EHLO reply. The first line is the
/// server's name and greeting and is skipped (RFC 5321 §4.1.1.1).
pub fn parse_ehlo(reply: &Reply) -> Capabilities {
    let mut caps = Capabilities::default();
    for line in reply.lines.iter().skip(1) {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        let line = line.to_ascii_uppercase();
        if line.is_empty() {
            continue;
        }
        apply_keyword(&mut caps, &line);
        caps.keywords.push(line);
    }
    caps
}

fn apply_keyword(caps: &mut Capabilities, line: &str) {
    let mut words = line.split(' ');
    let keyword = words.next().unwrap_or_default();
    match keyword {
        "STARTTLS" => caps.starttls = true,
        "PIPELINING" => caps.pipelining = true,
        "8BITMIME" => caps.eightbitmime = true,
        "SMTPUTF8" => caps.smtputf8 = true,
        "DSN" => caps.dsn = true,
        "REQUIRETLS" => caps.requiretls = true,
        "ENHANCEDSTATUSCODES" => caps.enhancedstatuscodes = true,
        "CHUNKING" => caps.chunking = true,
        // RFC 1870 §4: `SIZE` alone or with a number; an unreadable number
        // is taken as "no announced limit".
        "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
        "AUTH" => add_mechanisms(caps, words),
        _ => {
            // Some older servers announce `AUTH=LOGIN PLAIN`.
            if let Some(first) = keyword.strip_prefix("AUTH=") {
                add_mechanisms(caps, std::iter::once(first).chain(words));
            }
        }
    }
}

fn add_mechanisms<'a>(caps: &mut Capabilities, words: impl Iterator<Item = &'a str>) {
    for mechanism in words.filter(|w| !w.is_empty()) {
        if !caps.auth.iter().any(|m| m == mechanism) {
            caps.auth.push(mechanism.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::reply::ReplyParser;

    fn reply(text: &str) -> Reply {
        let mut parser = ReplyParser::new();
        parser.feed(text.as_bytes());
        parser.next_reply().unwrap().unwrap()
    }

    #[test]
    fn keywords() {
        let caps = parse_ehlo(&reply(
            "250-mx.example.org greets client.example.org\r\n\
             250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n\
             250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n\
             250-SMTPUTF8\r\n250-CHUNKING\r\n250-X-EXAMPLE  with   args\r\n\
             250 REQUIRETLS\r\n",
        ));
        assert!(caps.pipelining && caps.starttls && caps.enhancedstatuscodes);
        assert!(caps.eightbitmime && caps.dsn && caps.smtputf8 && caps.chunking);
        assert!(caps.requiretls);
        assert_eq!(caps.size, Some(10_240_000));
        assert!(caps.auth.is_empty());
        assert_eq!(caps.keywords.len(), 10);
        assert_eq!(caps.keywords[9], "REQUIRETLS");
        assert!(caps.keywords.contains(&"X-EXAMPLE WITH ARGS".to_owned()));
        assert!(caps.has("x-example"));
        assert!(!caps.has("X-EXAMP"));
        // The greeting line is not a keyword even if it looks like one.
        let caps = parse_ehlo(&reply("250-STARTTLS\r\n250 SIZE\r\n"));
        assert!(!caps.starttls);
        assert_eq!(caps.size, Some(0));
    }

    #[test]
    fn nothing_announced() {
        let caps = parse_ehlo(&reply("250 mx.example.org\r\n"));
        assert_eq!(caps, Capabilities::default());
        assert_eq!(caps.size, None);
    }

    #[test]
    fn case_insensitive() {
        let caps = parse_ehlo(&reply(
            "250-mx.example.org\r\n250-starttls\r\n250-Pipelining\r\n\
             250-auth plain Login\r\n250 size 1000\r\n",
        ));
        assert!(caps.starttls && caps.pipelining);
        assert_eq!(caps.auth, vec!["PLAIN", "LOGIN"]);
        assert_eq!(caps.size, Some(1000));
        assert_eq!(caps.keywords[2], "AUTH PLAIN LOGIN");
    }

    #[test]
    fn auth_lists() {
        let caps = parse_ehlo(&reply(
            "250-mx.example.org\r\n250-AUTH=LOGIN PLAIN\r\n\
             250-AUTH PLAIN CRAM-MD5\r\n250 SIZE not-a-number\r\n",
        ));
        assert_eq!(caps.auth, vec!["LOGIN", "PLAIN", "CRAM-MD5"]);
        assert_eq!(caps.size, Some(0));
    }
}
