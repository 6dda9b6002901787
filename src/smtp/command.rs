//! Command encoding: MAIL and RCPT with their parameters, xtext, AUTH
//! payloads and dot-stuffing of the message body.
//!
//! Pure functions over strings and bytes; the session decides which
//! parameters apply from the peer's [`Capabilities`].

use base64::Engine as _;

use super::ehlo::Capabilities;
use crate::envelope::{BodyType, DsnRequest, Notify, Ret};

/// Encodes `value` as xtext (RFC 3461 §4): `+`, `=` and every byte outside
/// `!`..`~` become `+HH` with uppercase hex digits.
pub fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if (b'!'..=b'~').contains(&byte) && byte != b'+' && byte != b'=' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("+{byte:02X}"));
        }
    }
    out
}

/// True when `value` can be put on a command line without changing the
/// command: no control characters (CR and LF above all).
pub fn is_safe_for_command(value: &str) -> bool {
    !value.chars().any(char::is_control)
}

/// True when `path` can go between the angle brackets of MAIL or RCPT: no
/// control characters and no angle brackets, which would end the path and
/// let the rest pass for parameters.
pub fn is_safe_path(path: &str) -> bool {
    is_safe_for_command(path) && !path.contains(['<', '>'])
}

/// True when `value` is a valid xtext string (RFC 3461 §4): printable
/// ASCII other than space and `=`, with every `+` starting a `+HH` escape.
pub fn is_xtext(value: &str) -> bool {
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hex = |b: Option<&u8>| {
                    b.is_some_and(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b))
                };
                if !hex(bytes.get(i + 1)) || !hex(bytes.get(i + 2)) {
                    return false;
                }
                i += 3;
            }
            b'=' => return false,
            b'!'..=b'~' => i += 1,
            _ => return false,
        }
    }
    true
}

/// What the MAIL command should carry besides the reverse path.
#[derive(Debug, Clone, Copy)]
pub struct MailOptions<'a> {
    /// The reverse path; empty for the null path `<>`.
    pub sender: &'a str,
    /// Message size in octets, for `SIZE=` (RFC 1870 §6).
    pub size: usize,
    /// The message has 8-bit content.
    pub eight_bit: bool,
    /// The transaction needs SMTPUTF8 (RFC 6531 §3.4).
    pub smtputf8: bool,
    /// Add REQUIRETLS (RFC 8689 §4.2.1).
    pub requiretls: bool,
    /// DSN options.
    pub dsn: &'a DsnRequest,
}

// LIMITATION: command lines are not checked against the 512-octet limit
// (RFC 5321 §4.5.3.1.4, raised by extensions such as RFC 3461 §5); a server
// that refuses an overlong line does so with a reply, reported as usual.

/// Builds `MAIL FROM:<sender> [params]`, adding each parameter only when
/// the peer announced the extension it belongs to.
pub fn mail_command(opts: &MailOptions<'_>, caps: &Capabilities) -> String {
    let mut cmd = format!("MAIL FROM:<{}>", opts.sender);
    if caps.size.is_some() {
        cmd.push_str(&format!(" SIZE={}", opts.size));
    }
    if caps.eightbitmime {
        // RFC 6152 §3: BODY=8BITMIME for 8-bit content; BODY=7BIT only when
        // the submitter asked for it.
        let eight = opts.eight_bit || opts.dsn.body == Some(BodyType::EightBitMime);
        if eight {
            cmd.push_str(" BODY=8BITMIME");
        } else if opts.dsn.body == Some(BodyType::SevenBit) {
            cmd.push_str(" BODY=7BIT");
        }
    }
    if opts.smtputf8 && caps.smtputf8 {
        cmd.push_str(" SMTPUTF8");
    }
    if opts.requiretls {
        cmd.push_str(" REQUIRETLS");
    }
    // RFC 3461 §5.2.1 / §5.2.2: pass RET and ENVID on only to a DSN server.
    if caps.dsn {
        if let Some(ret) = opts.dsn.ret {
            cmd.push_str(match ret {
                Ret::Full => " RET=FULL",
                Ret::Hdrs => " RET=HDRS",
            });
        }
        if let Some(envid) = &opts.dsn.envid {
            cmd.push_str(" ENVID=");
            cmd.push_str(&xtext(envid));
        }
    }
    cmd
}

/// Builds `RCPT TO:<address> [NOTIFY=..] [ORCPT=..]`. NOTIFY and ORCPT are
/// sent only to a DSN server (RFC 3461 §5.2.1, §5.2.2); `orcpt` must
/// already be `addr-type;xtext` (RFC 3461 §4.2) and is sent unchanged.
pub fn rcpt_command(
    address: &str,
    notify: Option<&[Notify]>,
    orcpt: Option<&str>,
    caps: &Capabilities,
) -> String {
    let mut cmd = format!("RCPT TO:<{address}>");
    if !caps.dsn {
        return cmd;
    }
    if let Some(list) = notify.filter(|l| !l.is_empty()) {
        let words: Vec<&str> = list
            .iter()
            .map(|n| match n {
                Notify::Never => "NEVER",
                Notify::Success => "SUCCESS",
                Notify::Failure => "FAILURE",
                Notify::Delay => "DELAY",
            })
            .collect();
        cmd.push_str(" NOTIFY=");
        cmd.push_str(&words.join(","));
    }
    if let Some(orcpt) = orcpt {
        cmd.push_str(" ORCPT=");
        cmd.push_str(orcpt);
    }
    cmd
}

/// The initial response for `AUTH PLAIN` (RFC 4616 §2, RFC 4954 §4):
/// base64 of `NUL user NUL password`, with an empty authorization identity.
pub fn auth_plain(user: &str, password: &str) -> String {
    let mut raw = Vec::with_capacity(user.len() + password.len() + 2);
    raw.push(0);
    raw.extend_from_slice(user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Base64 of one `AUTH LOGIN` answer (the user name or the password).
pub fn auth_login_answer(value: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(value.as_bytes())
}

/// Dot-stuffs a CRLF-normalised message for DATA (RFC 5321 §4.5.2) and
/// hands it out in pieces of roughly `chunk` bytes, so that large messages
/// are never copied whole. The terminating `.` line is not included; see
/// [`end_of_data`].
#[derive(Debug)]
pub struct DotStuffer<'a> {
    rest: &'a [u8],
    chunk: usize,
}

impl<'a> DotStuffer<'a> {
    /// Prepares `message` for sending in pieces of about `chunk` bytes.
    pub fn new(message: &'a [u8], chunk: usize) -> Self {
        Self {
            rest: message,
            chunk: chunk.max(1),
        }
    }

    /// The next piece, or `None` when the whole message was handed out.
    pub fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if self.rest.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(self.chunk + 64);
        while out.len() < self.chunk && !self.rest.is_empty() {
            let end = self
                .rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(self.rest.len(), |i| i + 1);
            let (line, rest) = self.rest.split_at(end);
            if line.first() == Some(&b'.') {
                out.push(b'.');
            }
            out.extend_from_slice(line);
            self.rest = rest;
        }
        Some(out)
    }
}

/// What ends the DATA section: CRLF first when the message does not end
/// with one, then `.` CRLF (RFC 5321 §4.1.1.4).
pub fn end_of_data(message: &[u8]) -> &'static [u8] {
    if message.is_empty() || message.ends_with(b"\r\n") {
        b".\r\n"
    } else {
        b"\r\n.\r\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuff(message: &[u8], chunk: usize) -> Vec<u8> {
        let mut stuffer = DotStuffer::new(message, chunk);
        let mut out = Vec::new();
        while let Some(piece) = stuffer.next_chunk() {
            out.extend(piece);
        }
        out.extend_from_slice(end_of_data(message));
        out
    }

    #[test]
    fn xtext_encoding() {
        assert_eq!(xtext("abc"), "abc");
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(xtext("é"), "+C3+A9");
        assert_eq!(xtext("\r\n~!"), "+0D+0A~!");
        assert!(is_xtext("rfc822;a+2Bb@example.org"));
        assert!(!is_xtext("rfc822;a b"));
        assert!(!is_xtext("a=b"));
        assert!(!is_xtext("a+2"));
        assert!(!is_xtext("a+2b"));
    }

    #[test]
    fn command_safety() {
        assert!(is_safe_for_command("user@example.org"));
        assert!(is_safe_for_command("\"a b\"@example.org"));
        assert!(!is_safe_for_command(
            "a@example.org>\r\nRCPT TO:<b@example.org"
        ));
        assert!(!is_safe_for_command("a\0b"));
        assert!(is_safe_path(""));
        assert!(!is_safe_path("a@example.org> SMTPUTF8"));
    }

    #[test]
    fn dot_stuffing() {
        let message = b".\r\n.x\r\nplain\r\n..two\r\nmid.dot\r\n.";
        let expected = b"..\r\n..x\r\nplain\r\n...two\r\nmid.dot\r\n..\r\n.\r\n";
        for chunk in [1, 3, 7, 1024] {
            assert_eq!(stuff(message, chunk), expected, "chunk {chunk}");
        }
        assert_eq!(stuff(b"a\r\n", 10), b"a\r\n.\r\n");
        assert_eq!(stuff(b"", 10), b".\r\n");
    }

    #[test]
    fn auth_payloads() {
        // "\0user@example.org\0secret"
        assert_eq!(
            auth_plain("user@example.org", "secret"),
            "AHVzZXJAZXhhbXBsZS5vcmcAc2VjcmV0"
        );
        assert_eq!(auth_login_answer("user"), "dXNlcg==");
    }

    #[test]
    fn mail_parameters_follow_capabilities() {
        let dsn = DsnRequest {
            notify: None,
            ret: Some(Ret::Hdrs),
            envid: Some("q1+x y".into()),
            body: None,
        };
        let opts = MailOptions {
            sender: "a@example.org",
            size: 123,
            eight_bit: true,
            smtputf8: true,
            requiretls: true,
            dsn: &dsn,
        };
        let none = Capabilities::default();
        assert_eq!(
            mail_command(&opts, &none),
            "MAIL FROM:<a@example.org> REQUIRETLS"
        );
        let all = Capabilities {
            size: Some(0),
            eightbitmime: true,
            smtputf8: true,
            dsn: true,
            ..Capabilities::default()
        };
        assert_eq!(
            mail_command(&opts, &all),
            "MAIL FROM:<a@example.org> SIZE=123 BODY=8BITMIME SMTPUTF8 REQUIRETLS \
             RET=HDRS ENVID=q1+2Bx+20y"
        );
        let seven = DsnRequest {
            body: Some(BodyType::SevenBit),
            ..DsnRequest::default()
        };
        let opts = MailOptions {
            sender: "",
            eight_bit: false,
            smtputf8: false,
            requiretls: false,
            dsn: &seven,
            ..opts
        };
        assert_eq!(mail_command(&opts, &all), "MAIL FROM:<> SIZE=123 BODY=7BIT");
    }

    #[test]
    fn rcpt_parameters_follow_capabilities() {
        let notify = [Notify::Success, Notify::Failure];
        let none = Capabilities::default();
        assert_eq!(
            rcpt_command(
                "b@example.org",
                Some(&notify),
                Some("rfc822;b@example.org"),
                &none
            ),
            "RCPT TO:<b@example.org>"
        );
        let dsn = Capabilities {
            dsn: true,
            ..Capabilities::default()
        };
        assert_eq!(
            rcpt_command(
                "b@example.org",
                Some(&notify),
                Some("rfc822;b+2B@example.org"),
                &dsn
            ),
            "RCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2B@example.org"
        );
        assert_eq!(
            rcpt_command("b@example.org", Some(&[Notify::Never]), None, &dsn),
            "RCPT TO:<b@example.org> NOTIFY=NEVER"
        );
        assert_eq!(
            rcpt_command("b@example.org", Some(&[]), None, &dsn),
            "RCPT TO:<b@example.org>"
        );
    }
}
