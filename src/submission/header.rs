//! The header section of a submitted message (RFC 5322 §2.2, §3.6).
//!
//! Fields are kept as the bytes they arrived as, so a field smarthost does
//! not change goes out exactly as written.

/// One header field: its name and every line of it, CRLFs included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The name as written.
    pub name: String,
    /// The whole field, from the name to the final CRLF.
    pub raw: Vec<u8>,
}

impl Field {
    /// Builds a field from a name and a value (which may contain folds).
    pub fn new(name: &str, value: &str) -> Self {
        Self {
            name: name.to_owned(),
            raw: format!("{name}: {value}\r\n").into_bytes(),
        }
    }

    /// True when the field has this name (case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The value after the colon, folds and the final CRLF included.
    pub fn value_bytes(&self) -> &[u8] {
        let colon = self.raw.iter().position(|&b| b == b':').unwrap_or(0);
        let value = &self.raw[colon + 1..];
        value.strip_suffix(b"\r\n").unwrap_or(value)
    }

    /// Where the value starts in [`Field::raw`].
    pub fn value_offset(&self) -> usize {
        self.raw
            .iter()
            .position(|&b| b == b':')
            .map_or(0, |c| c + 1)
    }
}

/// A message split into its header fields and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header fields in order.
    pub fields: Vec<Field>,
    /// Everything after the empty line that ends the header section.
    pub body: Vec<u8>,
}

/// The name of a header line (`Name:` with printable ASCII, RFC 5322
/// §2.2; obsolete white space before the colon allowed, §4.5), if it is
/// one.
fn field_name(line: &[u8]) -> Option<&str> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let trimmed = name
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(&name[..0], |end| &name[..=end]);
    if trimmed.is_empty() || !trimmed.iter().all(|&b| (33..=126).contains(&b)) {
        return None;
    }
    std::str::from_utf8(trimmed).ok()
}

impl Message {
    /// Splits a message with CRLF line ends. The header section ends at the
    /// first empty line; a line that is neither a field nor a continuation
    /// ends it too and starts the body (an empty line is put before it when
    /// the message is written out).
    pub fn parse(text: &[u8]) -> Self {
        let mut fields: Vec<Field> = Vec::new();
        let mut at = 0;
        while at < text.len() {
            let end = text[at..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(text.len(), |p| at + p + 2);
            let line = &text[at..end];
            let content = line.strip_suffix(b"\r\n").unwrap_or(line);
            if content.is_empty() {
                at = end;
                break;
            }
            if matches!(content[0], b' ' | b'\t') {
                match fields.last_mut() {
                    Some(field) => field.raw.extend_from_slice(line),
                    None => break,
                }
            } else if let Some(name) = field_name(content) {
                fields.push(Field {
                    name: name.to_owned(),
                    raw: line.to_vec(),
                });
            } else {
                break;
            }
            at = end;
        }
        Self {
            fields,
            body: text[at..].to_vec(),
        }
    }

    /// The first field with this name.
    pub fn get(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.is(name))
    }

    /// Removes every field with one of these names.
    pub fn remove(&mut self, names: &[&str]) {
        self.fields.retain(|f| !names.iter().any(|n| f.is(n)));
    }

    /// The message as bytes: fields, the empty line, the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 4096);
        for f in &self.fields {
            out.extend_from_slice(&f.raw);
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_continuations_and_body() {
        let m = Message::parse(b"To: a@x,\r\n b@y\r\nSubject: s\r\n\r\nbody\r\n");
        assert_eq!(m.fields.len(), 2);
        assert_eq!(m.fields[0].value_bytes(), b" a@x,\r\n b@y");
        assert_eq!(m.body, b"body\r\n");
        assert_eq!(
            m.to_bytes(),
            b"To: a@x,\r\n b@y\r\nSubject: s\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn a_message_without_headers_is_all_body() {
        let m = Message::parse(b"hello world\r\n");
        assert!(m.fields.is_empty());
        assert_eq!(m.to_bytes(), b"\r\nhello world\r\n");
    }

    #[test]
    fn a_non_header_line_starts_the_body() {
        let m = Message::parse(b"Subject: s\r\nthis is text\r\n");
        assert_eq!(m.fields.len(), 1);
        assert_eq!(m.to_bytes(), b"Subject: s\r\n\r\nthis is text\r\n");
    }

    #[test]
    fn obsolete_space_before_colon() {
        let m = Message::parse(b"Subject : s\r\n\r\n");
        assert!(m.get("subject").is_some());
    }
}
