//! SMTP replies: the [`Reply`] value and an incremental, sans-I/O parser.
//!
//! A reply is one or more lines `NNN-text` ending with a line `NNN text`
//! (RFC 5321 §4.2). The parser takes bytes as they arrive from the network
//! and hands out complete replies; it never reads or writes a socket. It
//! also extracts an enhanced status code (RFC 3463, announced with
//! ENHANCEDSTATUSCODES, RFC 2034 §4) when the first line starts with one.

use std::fmt;

/// Longest reply line accepted, CRLF included. RFC 5321 §4.5.3.1.5 sets 512
/// octets; real servers exceed that with long texts, so the parser is
/// lenient up to this size and rejects anything longer.
pub const MAX_REPLY_LINE: usize = 4096;

/// Most lines accepted in one multiline reply. EHLO replies with a few dozen
/// keywords are normal; thousands mean a broken or hostile peer.
pub const MAX_REPLY_LINES: usize = 256;

/// An enhanced mail system status code, `class.subject.detail` (RFC 3463 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// The subject, 0 to 999.
    pub subject: u16,
    /// The detail, 0 to 999.
    pub detail: u16,
}

impl EnhancedCode {
    /// Parses `class.subject.detail` (RFC 3463 §2: class is 2, 4 or 5, the
    /// other two parts are one to three digits).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let class = parts.next()?;
        let subject = parts.next()?;
        let detail = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let class = match class {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return None,
        };
        Some(Self {
            class,
            subject: parse_code_part(subject)?,
            detail: parse_code_part(detail)?,
        })
    }
}

/// One to three ASCII digits.
fn parse_code_part(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A complete SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code (RFC 5321 §4.2).
    pub code: u16,
    /// The enhanced status code from the first line, if it had one.
    pub enhanced: Option<EnhancedCode>,
    /// The text of each line, without the code, the separator and, where a
    /// line starts with the same enhanced code as the first one, without
    /// that code.
    pub lines: Vec<String>,
}

impl Reply {
    /// A 2xx reply: the command succeeded.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// A 3xx reply: the server waits for more (354 after DATA, 334 in AUTH).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// A 4xx reply: the command failed, trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// A 5xx reply: the command failed and will fail again.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The reply on one line: `550 5.1.1 user unknown`, with the lines of a
    /// multiline reply joined by ` / `.
    pub fn text(&self) -> String {
        let mut out = self.code.to_string();
        if let Some(enhanced) = self.enhanced {
            out.push(' ');
            out.push_str(&enhanced.to_string());
        }
        let joined = self.lines.join(" / ");
        if !joined.is_empty() {
            out.push(' ');
            out.push_str(&joined);
        }
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// A reply line that does not follow RFC 5321 §4.2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The line does not start with a three-digit code from 200 to 599
    /// followed by a space, a hyphen or the end of the line.
    #[error("malformed reply line {line:?}")]
    BadLine {
        /// The offending line, shortened to 100 characters.
        line: String,
    },
    /// A multiline reply changed its code between lines.
    #[error("multiline reply mixes codes {first} and {other}")]
    MixedCodes {
        /// The code of the first line.
        first: u16,
        /// The differing code.
        other: u16,
    },
    /// A line longer than [`MAX_REPLY_LINE`] bytes.
    #[error("reply line longer than {MAX_REPLY_LINE} bytes")]
    LineTooLong,
    /// A multiline reply with more than [`MAX_REPLY_LINES`] lines.
    #[error("reply has more than {MAX_REPLY_LINES} lines")]
    TooManyLines,
}

/// Incremental reply parser: [`feed`](Self::feed) bytes as they arrive,
/// then call [`next_reply`](Self::next_reply) until it returns `None`.
///
/// After an error the parser's state is unspecified; the session that owns
/// it should be abandoned.
#[derive(Debug, Default)]
pub struct ReplyParser {
    /// Bytes received and not yet parsed into lines.
    buf: Vec<u8>,
    /// Code of the reply in progress, once its first line was seen.
    code: Option<u16>,
    /// Lines of the reply in progress.
    lines: Vec<String>,
}

impl ReplyParser {
    /// A parser with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes received from the peer.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// True when bytes are buffered that do not yet form a complete reply,
    /// or a complete reply is waiting. Used after STARTTLS's 220 reply,
    /// where anything buffered was sent before TLS and must be refused
    /// (RFC 3207 §4.2; the STARTTLS injection of RFC 7457 §2.1).
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty() || self.code.is_some()
    }

    /// Parses the next complete reply from the buffered bytes, or returns
    /// `None` when more bytes are needed.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            if end + 1 > MAX_REPLY_LINE {
                return Err(ReplyError::LineTooLong);
            }
            let raw: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(reply) = self.take_line(line)? {
                return Ok(Some(reply));
            }
        }
        if self.buf.len() >= MAX_REPLY_LINE {
            return Err(ReplyError::LineTooLong);
        }
        Ok(None)
    }

    /// Parses one line without its line ending; returns the reply when the
    /// line was its last.
    pub fn feed_line(&mut self, line: &str) -> Result<Option<Reply>, ReplyError> {
        if line.len() + 2 > MAX_REPLY_LINE {
            return Err(ReplyError::LineTooLong);
        }
        self.take_line(line)
    }

    fn take_line(&mut self, line: &str) -> Result<Option<Reply>, ReplyError> {
        let (code, last, text) = split_line(line)?;
        match self.code {
            Some(first) if first != code => {
                return Err(ReplyError::MixedCodes { first, other: code });
            }
            Some(_) => {}
            None => self.code = Some(code),
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines);
        }
        self.lines.push(text.to_owned());
        if !last {
            return Ok(None);
        }
        self.code = None;
        Ok(Some(build_reply(code, std::mem::take(&mut self.lines))))
    }
}

/// Splits `NNN-text` / `NNN text` / `NNN` into code, "is last line", text.
fn split_line(line: &str) -> Result<(u16, bool, &str), ReplyError> {
    let bad = || ReplyError::BadLine {
        line: line.chars().take(100).collect(),
    };
    let bytes = line.as_bytes();
    if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    // RFC 5321 §4.2: the first digit is 2 to 5; 1yz is not used by SMTP.
    if !(b'2'..=b'5').contains(&bytes[0]) {
        return Err(bad());
    }
    let code = u16::from(bytes[0] - b'0') * 100
        + u16::from(bytes[1] - b'0') * 10
        + u16::from(bytes[2] - b'0');
    match bytes.get(3) {
        None => Ok((code, true, "")),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(bad()),
    }
}

/// Builds the reply, taking an enhanced code from the first line when its
/// class matches the reply code's first digit (RFC 3463 §2, RFC 2034 §4).
fn build_reply(code: u16, mut lines: Vec<String>) -> Reply {
    let enhanced = lines
        .first()
        .and_then(|first| first.split(' ').next())
        .and_then(EnhancedCode::parse)
        .filter(|e| u16::from(e.class) == code / 100);
    if let Some(enhanced) = enhanced {
        let prefix = enhanced.to_string();
        for line in &mut lines {
            if let Some(rest) = line.strip_prefix(&prefix) {
                if rest.is_empty() || rest.starts_with(' ') {
                    *line = rest.trim_start_matches(' ').to_owned();
                }
            }
        }
    }
    Reply {
        code,
        enhanced,
        lines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Reply>, ReplyError> {
        let mut parser = ReplyParser::new();
        parser.feed(input);
        let mut out = Vec::new();
        while let Some(reply) = parser.next_reply()? {
            out.push(reply);
        }
        Ok(out)
    }

    #[test]
    fn single_line() {
        let replies = parse_all(b"250 OK\r\n").unwrap();
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].code, 250);
        assert_eq!(replies[0].lines, vec!["OK"]);
        assert_eq!(replies[0].enhanced, None);
        assert!(replies[0].is_positive());
        assert_eq!(replies[0].text(), "250 OK");
    }

    #[test]
    fn bare_code_and_lf_only() {
        let replies = parse_all(b"354\n").unwrap();
        assert_eq!(replies[0].code, 354);
        assert!(replies[0].is_intermediate());
        assert_eq!(replies[0].text(), "354");
    }

    #[test]
    fn multiline_and_split_feeds() {
        let mut parser = ReplyParser::new();
        parser.feed(b"250-mx.example.org hello\r\n250-PIPEL");
        assert_eq!(parser.next_reply().unwrap(), None);
        assert!(parser.has_buffered());
        parser.feed(b"INING\r\n250 DSN\r\n220 next");
        let reply = parser.next_reply().unwrap().unwrap();
        assert_eq!(
            reply.lines,
            vec!["mx.example.org hello", "PIPELINING", "DSN"]
        );
        assert_eq!(reply.text(), "250 mx.example.org hello / PIPELINING / DSN");
        assert_eq!(parser.next_reply().unwrap(), None);
        assert!(parser.has_buffered());
        parser.feed(b"\r\n");
        assert_eq!(parser.next_reply().unwrap().unwrap().code, 220);
        assert!(!parser.has_buffered());
    }

    #[test]
    fn enhanced_code() {
        let replies =
            parse_all(b"550-5.1.1 user unknown\r\n550 5.1.1 see https://example.org\r\n").unwrap();
        let reply = &replies[0];
        assert!(reply.is_permanent());
        assert_eq!(
            reply.enhanced,
            Some(EnhancedCode {
                class: 5,
                subject: 1,
                detail: 1
            })
        );
        assert_eq!(reply.enhanced.unwrap().to_string(), "5.1.1");
        assert_eq!(reply.lines, vec!["user unknown", "see https://example.org"]);
        assert_eq!(
            reply.text(),
            "550 5.1.1 user unknown / see https://example.org"
        );
        assert_eq!(reply.to_string(), reply.text());
    }

    #[test]
    fn enhanced_code_class_must_match() {
        let reply = &parse_all(b"451 5.1.1 odd\r\n").unwrap()[0];
        assert!(reply.is_transient());
        assert_eq!(reply.enhanced, None);
        assert_eq!(reply.lines, vec!["5.1.1 odd"]);
        let reply = &parse_all(b"250 2.0.0\r\n").unwrap()[0];
        assert_eq!(reply.enhanced.map(|e| e.to_string()), Some("2.0.0".into()));
        assert_eq!(reply.text(), "250 2.0.0");
        // Not an enhanced code: four parts, or more than three digits.
        assert_eq!(EnhancedCode::parse("5.1.1.1"), None);
        assert_eq!(EnhancedCode::parse("5.1000.1"), None);
        assert_eq!(EnhancedCode::parse("3.1.1"), None);
        assert_eq!(EnhancedCode::parse("5..1"), None);
    }

    #[test]
    fn malformed_lines() {
        for input in [
            &b"25 short\r\n"[..],
            b"abc text\r\n",
            b"150 one-xx codes are not SMTP\r\n",
            b"650 out of range\r\n",
            b"250_OK\r\n",
        ] {
            assert!(
                matches!(parse_all(input), Err(ReplyError::BadLine { .. })),
                "{input:?}"
            );
        }
    }

    #[test]
    fn mixed_codes() {
        assert_eq!(
            parse_all(b"250-first\r\n251 second\r\n"),
            Err(ReplyError::MixedCodes {
                first: 250,
                other: 251
            })
        );
    }

    #[test]
    fn overlong_line() {
        let mut long = b"250 ".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_REPLY_LINE));
        // Without a line ending yet: refused once the buffer passes the limit.
        let mut parser = ReplyParser::new();
        parser.feed(&long);
        assert_eq!(parser.next_reply(), Err(ReplyError::LineTooLong));
        // With a line ending.
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse_all(&long), Err(ReplyError::LineTooLong));
        // Just under the limit is fine.
        let mut ok = b"250 ".to_vec();
        ok.extend(std::iter::repeat_n(b'x', MAX_REPLY_LINE - 6));
        ok.extend_from_slice(b"\r\n");
        assert_eq!(parse_all(&ok).unwrap()[0].code, 250);
    }

    #[test]
    fn too_many_lines() {
        let mut input = Vec::new();
        for _ in 0..=MAX_REPLY_LINES {
            input.extend_from_slice(b"250-x\r\n");
        }
        input.extend_from_slice(b"250 x\r\n");
        assert_eq!(parse_all(&input), Err(ReplyError::TooManyLines));
    }

    #[test]
    fn feed_line() {
        let mut parser = ReplyParser::new();
        assert_eq!(parser.feed_line("221-bye").unwrap(), None);
        let reply = parser.feed_line("221 2.0.0 closing").unwrap().unwrap();
        assert_eq!(reply.code, 221);
        assert_eq!(reply.lines, vec!["bye", "2.0.0 closing"]);
        // "bye" has no enhanced code; only the first line decides.
        assert_eq!(reply.enhanced, None);
    }
}
