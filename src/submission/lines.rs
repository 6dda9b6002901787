//! Keeping every line within 998 octets (RFC 5322 §2.1.1, RFC 5321
//! §4.5.3.1.6), without refusing the message.
//!
//! The rule, in order:
//!
//! 1. A MIME leaf part (or the body of a message without MIME structure)
//!    that has an over-long line and no transfer encoding (absent, `7bit`,
//!    `8bit` or `binary`) is re-encoded as quoted-printable (RFC 2045
//!    §6.7) and its `Content-Transfer-Encoding` set accordingly. Decoding
//!    gives back the original octets, line breaks included.
//! 2. An over-long header line is folded (RFC 5322 §2.2.3) before the last
//!    white space that keeps the line short enough, which unfolds to the
//!    same value; a header line with no such white space is folded with an
//!    inserted space.
//! 3. Any other over-long line (base64 that was never wrapped, a nested
//!    message, a multipart preamble) is broken with a plain CRLF every 998
//!    octets, as Postfix's SMTP client does; base64 decoders skip line
//!    breaks.

use mail_parser::{Encoding, MessageParser, PartType};

use super::header::{Field, Message};

/// The longest line, CRLF not counted.
pub const MAX_LINE: usize = 998;

/// Returns `message` (CRLF line ends) with every line at most [`MAX_LINE`]
/// octets long.
pub fn fit_line_length(message: Vec<u8>) -> Vec<u8> {
    if !has_long_line(&message) {
        return message;
    }
    let reencoded = reencode_long_parts(&message).unwrap_or(message);
    if !has_long_line(&reencoded) {
        return reencoded;
    }
    break_long_lines(&reencoded)
}

fn has_long_line(text: &[u8]) -> bool {
    text.split(|&b| b == b'\n')
        .any(|line| line.strip_suffix(b"\r").unwrap_or(line).len() > MAX_LINE)
}

/// Step 1; `None` when no part needed it.
fn reencode_long_parts(message: &[u8]) -> Option<Vec<u8>> {
    let parsed = MessageParser::default().parse(message)?;
    let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    for part in &parsed.parts {
        let leaf = matches!(
            part.body,
            PartType::Text(_) | PartType::Html(_) | PartType::Binary(_) | PartType::InlineBinary(_)
        );
        let (start, body, end) = (
            part.offset_header as usize,
            part.offset_body as usize,
            part.offset_end as usize,
        );
        if !leaf || part.encoding != Encoding::None || start > body || body > end {
            continue;
        }
        let Some(content) = message.get(body..end) else {
            continue;
        };
        if !has_long_line(content) {
            continue;
        }
        let mut head = Message::parse(&message[start..body]);
        head.remove(&["Content-Transfer-Encoding"]);
        head.fields
            .push(Field::new("Content-Transfer-Encoding", "quoted-printable"));
        let mut replacement = head.to_bytes();
        replacement.extend_from_slice(&quoted_printable::encode(content));
        if content.ends_with(b"\r\n") && !replacement.ends_with(b"\r\n") {
            // A soft break keeps the part's last line end out of its
            // content, exactly as before.
            replacement.extend_from_slice(b"=\r\n");
        }
        edits.push((start, end, replacement));
    }
    if edits.is_empty() {
        return None;
    }
    edits.sort_by_key(|e| e.0);
    // Nested leaves cannot overlap, but a malformed structure might: keep
    // the first of overlapping edits.
    let mut out = Vec::with_capacity(message.len() + message.len() / 8);
    let mut at = 0;
    for (start, end, replacement) in edits {
        if start < at {
            continue;
        }
        out.extend_from_slice(&message[at..start]);
        out.extend_from_slice(&replacement);
        at = end;
    }
    out.extend_from_slice(&message[at..]);
    Some(out)
}

/// Steps 2 and 3.
fn break_long_lines(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64);
    let mut in_header = true;
    for line in message.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\r\n").unwrap_or(line);
        if content.is_empty() {
            in_header = false;
        }
        if content.len() <= MAX_LINE {
            out.extend_from_slice(line);
            continue;
        }
        if in_header {
            fold_header_line(content, &mut out);
        } else {
            for chunk in content.chunks(MAX_LINE) {
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out
}

fn fold_header_line(mut rest: &[u8], out: &mut Vec<u8>) {
    let mut first = true;
    while rest.len() > MAX_LINE {
        // A continuation line starts with its white space; do not fold
        // at that very first octet.
        let from = usize::from(!first);
        let cut = rest[from..=MAX_LINE]
            .iter()
            .rposition(|&b| b == b' ' || b == b'\t')
            .map(|p| p + from)
            .filter(|&p| p > 0);
        match cut {
            Some(p) => {
                out.extend_from_slice(&rest[..p]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[p..];
            }
            None => {
                out.extend_from_slice(&rest[..MAX_LINE - 1]);
                out.extend_from_slice(b"\r\n ");
                rest = &rest[MAX_LINE - 1..];
            }
        }
        first = false;
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn longest(text: &[u8]) -> usize {
        text.split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).len())
            .max()
            .unwrap_or(0)
    }

    fn decoded_text(message: &[u8]) -> String {
        let parsed = MessageParser::default().parse(message).unwrap();
        parsed.body_text(0).unwrap().into_owned()
    }

    #[test]
    fn short_lines_are_untouched() {
        let m = b"Subject: s\r\n\r\nbody\r\n".to_vec();
        assert_eq!(fit_line_length(m.clone()), m);
    }

    #[test]
    fn plain_body_is_reencoded_quoted_printable() {
        let long = "é".repeat(1500);
        let m = format!("Subject: s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nfirst\r\n{long}\r\nlast\r\n");
        let out = fit_line_length(m.into_bytes());
        assert!(longest(&out) <= MAX_LINE);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("Content-Transfer-Encoding: quoted-printable\r\n"));
        assert!(!text.contains("8bit"));
        assert_eq!(decoded_text(&out), format!("first\r\n{long}\r\nlast\r\n"));
    }

    #[test]
    fn only_the_long_part_of_a_multipart_is_reencoded() {
        let long = "x".repeat(3000);
        let m = format!(
            "Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nshort part\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\n{long}\r\n--b--\r\n"
        );
        let out = fit_line_length(m.into_bytes());
        assert!(longest(&out) <= MAX_LINE);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("--b\r\nContent-Type: text/plain\r\n\r\nshort part\r\n--b\r\n"));
        let parsed = MessageParser::default().parse(&out).unwrap();
        assert_eq!(parsed.body_text(1).unwrap(), long);
    }

    #[test]
    fn long_header_is_folded_at_white_space() {
        let words = vec!["word"; 400].join(" ");
        let m = format!("Subject: {words}\r\n\r\nbody\r\n");
        let out = fit_line_length(m.into_bytes());
        assert!(longest(&out) <= MAX_LINE);
        let unfolded = String::from_utf8(out).unwrap().replace("\r\n ", " ");
        assert!(unfolded.starts_with(&format!("Subject: {words}\r\n")));
    }

    #[test]
    fn base64_that_was_never_wrapped_is_broken_into_lines() {
        let b64 = "QUJD".repeat(600);
        let m = format!(
            "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n"
        );
        let out = fit_line_length(m.into_bytes());
        assert!(longest(&out) <= MAX_LINE);
        let text = String::from_utf8(out).unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap().replace("\r\n", "");
        assert_eq!(body, b64);
    }
}
