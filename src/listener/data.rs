//! Reading the DATA section (RFC 5321 §4.1.1.4, §4.5.2): undoing the dot
//! stuffing and finding the end.
//!
//! The rule that keeps SMTP smuggling out: the message ends only at
//! CRLF `.` CRLF. A bare LF or a bare CR (RFC 5321 §2.3.8 forbids both
//! outside a CRLF pair) is never taken as a line end, so `LF . LF` or
//! `LF . CRLF` cannot end the message early and let the bytes after it
//! pass for commands. A message that contains either is refused as a
//! whole once its real end has been read (550 5.6.11), so such bytes are
//! never passed on to the next hop, where another server might read them
//! as line ends.

/// Where the decoder is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or at the start of the data).
    LineStart,
    /// A `.` at the start of a line.
    Dot,
    /// `.` CR at the start of a line.
    DotCr,
    /// Inside a line.
    Text,
    /// A CR inside a line.
    Cr,
}

/// Decodes a DATA section fed in pieces.
#[derive(Debug)]
pub struct DataDecoder {
    state: State,
    message: Vec<u8>,
    limit: u64,
    size: u64,
    bare_line_end: bool,
}

/// A finished DATA section.
#[derive(Debug)]
pub struct Data {
    /// The content with dot stuffing removed, CRLF line ends; empty when
    /// it was larger than the limit.
    pub message: Vec<u8>,
    /// Its size in octets, counted even past the limit.
    pub size: u64,
    /// It was larger than the limit.
    pub too_big: bool,
    /// It had a bare CR or LF.
    pub bare_line_end: bool,
}

impl DataDecoder {
    /// A decoder keeping at most `limit` octets of content.
    pub fn new(limit: u64) -> Self {
        Self {
            state: State::LineStart,
            message: Vec::new(),
            limit,
            size: 0,
            bare_line_end: false,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if self.size <= self.limit {
            self.message.extend_from_slice(bytes);
        }
    }

    /// Takes bytes from `input`; returns how many were used when the end
    /// of data was found in them (the rest belongs to the next command),
    /// `None` when all were used and more are needed.
    pub fn feed(&mut self, input: &[u8]) -> Option<usize> {
        for (i, &b) in input.iter().enumerate() {
            self.state = match (self.state, b) {
                (State::LineStart, b'.') => State::Dot,
                (State::Dot, b'\r') => State::DotCr,
                (State::DotCr, b'\n') => return Some(i + 1),
                (State::DotCr, _) => {
                    // `.` CR followed by something else: a bare CR.
                    self.bare_line_end = true;
                    self.text_byte(b)
                }
                // RFC 5321 §4.5.2: a line starting with a dot loses it.
                (State::Dot | State::LineStart | State::Text, _) => self.text_byte(b),
                (State::Cr, b'\n') => {
                    self.push(b"\r\n");
                    State::LineStart
                }
                (State::Cr, _) => {
                    self.bare_line_end = true;
                    self.push(b"\r");
                    self.text_byte(b)
                }
            };
        }
        None
    }

    fn text_byte(&mut self, b: u8) -> State {
        match b {
            b'\r' => State::Cr,
            b'\n' => {
                self.bare_line_end = true;
                self.push(b"\n");
                State::Text
            }
            _ => {
                self.push(&[b]);
                State::Text
            }
        }
    }

    /// The decoded section.
    pub fn finish(self) -> Data {
        let too_big = self.size > self.limit;
        Data {
            message: if too_big { Vec::new() } else { self.message },
            size: self.size,
            too_big,
            bare_line_end: self.bare_line_end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> (Option<usize>, Data) {
        let mut d = DataDecoder::new(1000);
        let used = d.feed(input);
        (used, d.finish())
    }

    #[test]
    fn dot_unstuffing_and_end_rfc5321_section_4_5_2() {
        let (used, d) = decode(b"a\r\n..b\r\n.\r\nQUIT\r\n");
        assert_eq!(used, Some(11));
        assert_eq!(d.message, b"a\r\n.b\r\n");
        assert!(!d.bare_line_end);
        let (used, d) = decode(b".\r\n");
        assert_eq!(used, Some(3));
        assert!(d.message.is_empty());
    }

    #[test]
    fn end_found_across_pieces() {
        let mut d = DataDecoder::new(1000);
        assert_eq!(d.feed(b"x\r\n."), None);
        assert_eq!(d.feed(b"\r"), None);
        assert_eq!(d.feed(b"\nrest"), Some(1));
        assert_eq!(d.finish().message, b"x\r\n");
    }

    #[test]
    fn bare_lf_never_ends_the_message_rfc5321_section_2_3_8() {
        // The smuggling forms: LF.LF, LF.CRLF and CRLF.LF are content,
        // and the message is marked for refusal.
        for input in [
            &b"a\n.\nMAIL FROM:<x@y>\r\n.\r\n"[..],
            b"a\n.\r\nMAIL FROM:<x@y>\r\n.\r\n",
            b"a\r\n.\nMAIL FROM:<x@y>\r\n.\r\n",
            b"a\r.\rMAIL FROM:<x@y>\r\n.\r\n",
        ] {
            let (used, d) = decode(input);
            assert_eq!(used, Some(input.len()), "{input:?}");
            assert!(d.bare_line_end, "{input:?}");
        }
    }

    #[test]
    fn size_limit_counts_past_the_limit() {
        let mut d = DataDecoder::new(4);
        assert_eq!(d.feed(b"123456\r\n.\r\n"), Some(11));
        let d = d.finish();
        assert!(d.too_big);
        assert_eq!(d.size, 8);
        assert!(d.message.is_empty());
    }
}
