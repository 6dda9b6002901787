//! Reading the message from standard input.
//!
//! Input may have LF, CRLF or mixed line ends; the result has CRLF only
//! (RFC 5322 §2.1). A bare CR inside a line ends the line, so that no lone
//! CR reaches the wire, where receivers disagree on its meaning; CRs just
//! before an LF belong to the line end. A leading Unix mailbox `From ` line
//! is dropped, a missing final line end is added, and, unless dots are
//! ignored (`-i`), a line holding only "." ends the message. Other lines
//! starting with a dot are kept as they are; the SMTP client dot-stuffs
//! them on the wire (RFC 5321 §4.5.2).

use std::io::{BufRead, Read};

use super::SubmitError;

/// Reads one message of at most `max_size` bytes of input from `input`.
///
/// The input is always read to its end, even when the message is too big
/// or a lone dot ended it, so the writer never sees a broken pipe.
pub fn read_message<R: BufRead>(
    input: &mut R,
    ignore_dots: bool,
    max_size: u64,
) -> Result<Vec<u8>, SubmitError> {
    let mut out = Vec::new();
    let mut line = Vec::new();
    let mut taken: u64 = 0;
    let mut first = true;
    loop {
        line.clear();
        let n = input
            .by_ref()
            .take(max_size.saturating_add(1).saturating_sub(taken))
            .read_until(b'\n', &mut line)
            .map_err(SubmitError::Read)?;
        if n == 0 {
            if taken > max_size {
                drain(input);
                return Err(SubmitError::TooBig { limit: max_size });
            }
            break;
        }
        taken += n as u64;
        if taken > max_size {
            drain(input);
            return Err(SubmitError::TooBig { limit: max_size });
        }
        let mut content: &[u8] = &line;
        if let Some(rest) = content.strip_suffix(b"\n") {
            content = rest;
        }
        while let Some(rest) = content.strip_suffix(b"\r") {
            content = rest;
        }
        if first {
            first = false;
            if content.starts_with(b"From ") {
                continue;
            }
        }
        if !ignore_dots && content == b"." {
            drain(input);
            break;
        }
        for piece in content.split(|&b| b == b'\r') {
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
    }
    Ok(out)
}

/// Reads and discards whatever is left.
fn drain<R: Read>(input: &mut R) {
    let _ = std::io::copy(input, &mut std::io::sink());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8], ignore_dots: bool) -> Vec<u8> {
        read_message(&mut &input[..], ignore_dots, 1 << 20).unwrap()
    }

    #[test]
    fn line_ends_become_crlf() {
        assert_eq!(read(b"a\nb\r\nc\r\r\nd", true), b"a\r\nb\r\nc\r\nd\r\n");
        assert_eq!(read(b"x\ry\n", true), b"x\r\ny\r\n");
    }

    #[test]
    fn lone_dot_ends_input_unless_ignored() {
        let input = b"Subject: s\n\nbody\n.\nafter\n";
        assert_eq!(read(input, false), b"Subject: s\r\n\r\nbody\r\n");
        assert_eq!(
            read(input, true),
            b"Subject: s\r\n\r\nbody\r\n.\r\nafter\r\n"
        );
        assert_eq!(read(b"a\r\n.\r\nb", false), b"a\r\n");
        assert_eq!(read(b"a\n.", false), b"a\r\n");
    }

    #[test]
    fn other_dot_lines_are_kept() {
        assert_eq!(read(b"..\n.x\n", false), b"..\r\n.x\r\n");
    }

    #[test]
    fn leading_from_line_is_dropped() {
        assert_eq!(
            read(
                b"From me@x Thu Jan  1 00:00:00 1970\nSubject: s\n\nFrom here\n",
                true
            ),
            b"Subject: s\r\n\r\nFrom here\r\n"
        );
    }

    #[test]
    fn size_limit_counts_input_and_reads_to_the_end() {
        let input = [b'x'; 100];
        let mut reader = &input[..];
        let err = read_message(&mut reader, true, 99).unwrap_err();
        assert!(matches!(err, SubmitError::TooBig { limit: 99 }));
        assert!(reader.is_empty());
        assert_eq!(read_message(&mut &input[..], true, 100).unwrap().len(), 102);
    }

    #[test]
    fn empty_input_is_empty() {
        assert!(read(b"", false).is_empty());
    }
}
