//! Building a delivery status notification: a `multipart/report;
//! report-type=delivery-status` message (RFC 6522) whose second part is a
//! `message/delivery-status` (RFC 3464 §2) and whose third part returns the
//! message or only its header (RFC 3462 `text/rfc822-headers`, RFC 6522
//! §3).
//!
//! The MIME structure is built with lettre's message builder; the
//! delivery-status fields are plain `name: value` lines (RFC 3464 §2.1),
//! which are this module's own because no crate writes them.

use std::fmt::Write as _;

use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::Message;

/// What happened to one recipient (RFC 3464 §2.3.3 `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Delivery failed permanently.
    Failed,
    /// Still being retried.
    Delayed,
    /// Delivered to a server that takes no DSN requests further.
    Relayed,
    /// Delivered, and the next server takes the report requests on.
    Delivered,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Delayed => "delayed",
            Self::Relayed => "relayed",
            Self::Delivered => "delivered",
        }
    }
}

/// One recipient's block of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    /// The recipient address (`Final-Recipient: rfc822;...`).
    pub address: String,
    /// `ORCPT` as received, `addr-type;xtext` (RFC 3461 §4.2), for
    /// `Original-Recipient` (RFC 3464 §2.3.1).
    pub orcpt: Option<String>,
    /// The action.
    pub action: Action,
    /// The enhanced status code (RFC 3463).
    pub status: String,
    /// The host that answered, for `Remote-MTA`.
    pub remote_mta: Option<String>,
    /// The server's reply, for `Diagnostic-Code: smtp;`.
    pub diagnostic: Option<String>,
    /// What went wrong or right, in words, for the human-readable part.
    pub detail: String,
    /// The protection the copy had, for the human-readable part and the
    /// `X-Smarthost-Protection` extension field (RFC 3464 §2.4).
    pub protection: Option<String>,
    /// When the last attempt was, seconds since the Unix epoch.
    pub last_attempt: Option<i64>,
    /// For a delay, until when delivery is retried.
    pub will_retry_until: Option<i64>,
}

/// How much of the original message the report returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// The whole message, as `message/rfc822`.
    Full,
    /// Only the header, as `text/rfc822-headers`.
    Headers,
}

/// Everything a report says.
#[derive(Debug, Clone)]
pub struct ReportContent<'a> {
    /// This host's name (`Reporting-MTA: dns;`).
    pub reporting_mta: &'a str,
    /// Who the report is addressed to: the original envelope sender.
    pub to: &'a str,
    /// `ENVID` of the original message (RFC 3464 §2.2.1).
    pub envid: Option<&'a str>,
    /// When the original arrived, seconds since the Unix epoch.
    pub arrival: i64,
    /// The recipients reported on.
    pub recipients: &'a [RecipientReport],
    /// The original message, CRLF line ends.
    pub original: &'a [u8],
    /// How much of it to return.
    pub returned: Returned,
    /// Copy `TLS-Required: No` into the report, as the original carried it
    /// (RFC 8689 §6: a report carries the original's TLS requirement).
    pub tls_required_no: bool,
}

/// Why a report could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the delivery report to {to}: {reason}")]
pub struct ReportError {
    /// The report's recipient.
    pub to: String,
    /// What failed.
    pub reason: String,
}

/// Builds the report message, CRLF line ends.
pub fn build(content: &ReportContent<'_>) -> Result<Vec<u8>, ReportError> {
    let err = |reason: String| ReportError {
        to: content.to.to_owned(),
        reason,
    };
    let from: Mailbox = format!(
        "Mail Delivery System <MAILER-DAEMON@{}>",
        content.reporting_mta
    )
    .parse()
    .map_err(|e| err(format!("reporting address: {e}")))?;
    let to: Mailbox = content
        .to
        .parse()
        .map_err(|e| err(format!("recipient address: {e}")))?;
    let boundary = format!(
        "{:016x}{:016x}.{}",
        fastrand::u64(..),
        fastrand::u64(..),
        content.reporting_mta
    );
    let report_type = ContentType::parse(&format!(
        "multipart/report; report-type=delivery-status; boundary=\"{boundary}\""
    ))
    .map_err(|e| err(format!("content type: {e}")))?;
    let human = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(human_text(content));
    let status = SinglePart::builder()
        .header(
            ContentType::parse("message/delivery-status")
                .map_err(|e| err(format!("content type: {e}")))?,
        )
        .body(seven_bit(delivery_status(content)).map_err(err)?);
    let multipart = MultiPart::builder()
        .header(report_type)
        .singlepart(human)
        .singlepart(status)
        .singlepart(returned_part(content).map_err(err)?);
    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(subject(content.recipients))
        .date_now()
        .message_id(Some(format!(
            "<{}.{}@{}>",
            chrono::Utc::now().timestamp_micros(),
            fastrand::u32(..),
            content.reporting_mta
        )));
    // RFC 3834 §5: a report is an automatic response.
    builder = builder.raw_header(HeaderValue::new(
        HeaderName::new_from_ascii_str("Auto-Submitted"),
        "auto-replied".to_owned(),
    ));
    if content.tls_required_no {
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("TLS-Required"),
            "No".to_owned(),
        ));
    }
    let message = builder
        .multipart(multipart)
        .map_err(|e| err(e.to_string()))?;
    Ok(message.formatted())
}

/// The delivery-status part is 7-bit text (RFC 3464 §2.1). lettre takes
/// 7bit only for lines under 76 octets, so long fields are folded the way
/// header fields are (RFC 5322 §2.2.3), which RFC 3464 §2.1 allows.
fn seven_bit(text: String) -> Result<Body, String> {
    Body::new_with_encoding(fold_fields(&text), ContentTransferEncoding::SevenBit)
        .map_err(|_| "the delivery-status fields are not 7-bit".to_owned())
}

/// Folds every line longer than 72 characters at spaces, continuing with
/// a space; a word longer than a line is cut.
fn fold_fields(text: &str) -> String {
    const WIDTH: usize = 72;
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.lines() {
        let mut current = String::new();
        for word in line.split(' ') {
            let extra = usize::from(!current.is_empty());
            if !current.is_empty() && current.len() + extra + word.len() > WIDTH {
                out.push_str(&current);
                out.push('\n');
                current = String::from(" ");
            } else if extra == 1 {
                current.push(' ');
            }
            let mut rest = word;
            while current.len() + rest.len() > WIDTH {
                let room = WIDTH.saturating_sub(current.len()).max(1);
                let cut = (1..=room.min(rest.len()))
                    .rev()
                    .find(|&i| rest.is_char_boundary(i))
                    .unwrap_or(rest.len());
                current.push_str(&rest[..cut]);
                out.push_str(&current);
                out.push('\n');
                current = String::from(" ");
                rest = &rest[cut..];
            }
            current.push_str(rest);
        }
        out.push_str(&current);
        out.push('\n');
    }
    out
}

/// The third part: the message or its header.
// LIMITATION: lettre labels a part 7bit or 8bit only when every line is
// under 76 octets, and `message/rfc822` may not be base64 or
// quoted-printable (RFC 2046 §5.2.1); a message with longer lines is
// therefore returned by its header only (`text/rfc822-headers`, which may
// be quoted-printable), even when RET=FULL asked for all of it.
fn returned_part(content: &ReportContent<'_>) -> Result<SinglePart, String> {
    let header_end = find_header_end(content.original);
    let headers = &content.original[..header_end];
    if content.returned == Returned::Full {
        let encoding = if content.original.is_ascii() {
            ContentTransferEncoding::SevenBit
        } else {
            ContentTransferEncoding::EightBit
        };
        if let Ok(body) = Body::new_with_encoding(content.original.to_vec(), encoding) {
            let ct = ContentType::parse("message/rfc822").map_err(|e| e.to_string())?;
            return Ok(SinglePart::builder().header(ct).body(body));
        }
    }
    let ct = ContentType::parse("text/rfc822-headers").map_err(|e| e.to_string())?;
    // lettre picks 7bit, or quoted-printable for long or 8-bit lines.
    let body = match std::str::from_utf8(headers) {
        Ok(text) => Body::new(text.to_owned()),
        Err(_) => Body::new(headers.to_vec()),
    };
    Ok(SinglePart::builder().header(ct).body(body))
}

/// The offset just past the blank line that ends the header, or the whole
/// message when there is none.
fn find_header_end(message: &[u8]) -> usize {
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |p| p + 4)
}

fn subject(recipients: &[RecipientReport]) -> &'static str {
    let any = |a: Action| recipients.iter().any(|r| r.action == a);
    if any(Action::Failed) {
        "Undelivered Mail Returned to Sender"
    } else if any(Action::Delayed) {
        "Delayed Mail (still being retried)"
    } else {
        "Successful Mail Delivery Report"
    }
}

fn human_text(content: &ReportContent<'_>) -> String {
    let mut out = format!("This is the mail system at {}.\n\n", content.reporting_mta);
    let any = |a: Action| content.recipients.iter().any(|r| r.action == a);
    if any(Action::Failed) {
        out.push_str("Your message could not be delivered to these recipients:\n\n");
    } else if any(Action::Delayed) {
        out.push_str(
            "Your message has not been delivered yet to these recipients; \
             delivery is still being tried:\n\n",
        );
    } else {
        out.push_str("Your message was delivered to these recipients:\n\n");
    }
    for r in content.recipients {
        let _ = writeln!(out, "<{}>: {}", r.address, r.detail);
        if let Some(host) = &r.remote_mta {
            let _ = writeln!(out, "    server: {host}");
        }
        if let Some(reply) = &r.diagnostic {
            let _ = writeln!(out, "    reply: {reply}");
        }
        if let Some(p) = &r.protection {
            let _ = writeln!(out, "    protection: {p}");
        }
        if let Some(until) = r.will_retry_until {
            let _ = writeln!(out, "    will be retried until {}", rfc5322_date(until));
        }
        out.push('\n');
    }
    out
}

/// The `message/delivery-status` body (RFC 3464 §2.1 to §2.3).
fn delivery_status(content: &ReportContent<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Reporting-MTA: dns; {}", content.reporting_mta);
    if let Some(envid) = content.envid {
        let _ = writeln!(out, "Original-Envelope-Id: {}", ascii_field(envid));
    }
    let _ = writeln!(out, "Arrival-Date: {}", rfc5322_date(content.arrival));
    for r in content.recipients {
        out.push('\n');
        if let Some(orcpt) = r.orcpt.as_deref().and_then(original_recipient) {
            let _ = writeln!(out, "Original-Recipient: {orcpt}");
        }
        let _ = writeln!(out, "Final-Recipient: rfc822; {}", ascii_field(&r.address));
        let _ = writeln!(out, "Action: {}", r.action.as_str());
        let _ = writeln!(out, "Status: {}", r.status);
        if let Some(host) = &r.remote_mta {
            let _ = writeln!(out, "Remote-MTA: dns; {}", ascii_field(host));
        }
        if let Some(reply) = &r.diagnostic {
            let _ = writeln!(out, "Diagnostic-Code: smtp; {}", ascii_field(reply));
        }
        if let Some(at) = r.last_attempt {
            let _ = writeln!(out, "Last-Attempt-Date: {}", rfc5322_date(at));
        }
        if let Some(until) = r.will_retry_until {
            let _ = writeln!(out, "Will-Retry-Until: {}", rfc5322_date(until));
        }
        if let Some(p) = &r.protection {
            let _ = writeln!(out, "X-Smarthost-Protection: {}", ascii_field(p));
        }
    }
    out
}

/// `Original-Recipient` from an ORCPT parameter: the address type, then the
/// address with its xtext decoded (RFC 3461 §4.2, RFC 3464 §2.3.1).
fn original_recipient(orcpt: &str) -> Option<String> {
    let (kind, xtext) = orcpt.split_once(';')?;
    let mut decoded = Vec::with_capacity(xtext.len());
    let bytes = xtext.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'+' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let address = String::from_utf8(decoded).ok()?;
    Some(format!("{}; {}", kind.trim(), ascii_field(&address)))
}

/// Keeps a field value on one line of printable ASCII (RFC 3464 §2.1:
/// the fields are 7-bit text); anything else becomes `?`.
fn ascii_field(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn rfc5322_date(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .with_timezone(&chrono::Local)
        .to_rfc2822()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original() -> Vec<u8> {
        b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: hello\r\n\r\nsecret body\r\n"
            .to_vec()
    }

    fn failed() -> RecipientReport {
        RecipientReport {
            address: "bob@example.net".into(),
            orcpt: Some("rfc822;Bob+2Bx@example.net".into()),
            action: Action::Failed,
            status: "5.1.1".into(),
            remote_mta: Some("mx.example.net".into()),
            diagnostic: Some("550 5.1.1 no such user".into()),
            detail: "refused by the receiving server".into(),
            protection: None,
            last_attempt: Some(1_700_000_000),
            will_retry_until: None,
        }
    }

    fn content<'a>(
        recipients: &'a [RecipientReport],
        original: &'a [u8],
        returned: Returned,
    ) -> ReportContent<'a> {
        ReportContent {
            reporting_mta: "smarthost.example.org",
            to: "alice@example.org",
            envid: Some("QQ314159"),
            arrival: 1_700_000_000,
            recipients,
            original,
            returned,
            tls_required_no: false,
        }
    }

    fn parts(report: &[u8]) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(report)
            .expect("the report parses as MIME")
    }

    #[test]
    fn failure_report_is_multipart_report_with_delivery_status_rfc3464_section_2() {
        let rcpts = [failed()];
        let original = original();
        let report = build(&content(&rcpts, &original, Returned::Full)).unwrap();
        let text = String::from_utf8_lossy(&report);
        assert!(text.contains("report-type=delivery-status"), "{text}");
        assert!(text.contains("Auto-Submitted: auto-replied"), "{text}");
        let msg = parts(&report);
        assert_eq!(msg.parts.len(), 4, "container plus three parts");
        let status = String::from_utf8_lossy(msg.parts[2].contents());
        for line in [
            "Reporting-MTA: dns; smarthost.example.org",
            "Original-Envelope-Id: QQ314159",
            "Original-Recipient: rfc822; Bob+x@example.net",
            "Final-Recipient: rfc822; bob@example.net",
            "Action: failed",
            "Status: 5.1.1",
            "Remote-MTA: dns; mx.example.net",
            "Diagnostic-Code: smtp; 550 5.1.1 no such user",
        ] {
            assert!(status.contains(line), "{line} in {status}");
        }
        let returned = String::from_utf8_lossy(msg.parts[3].contents());
        assert!(
            returned.contains("secret body"),
            "RET=FULL returns the body"
        );
        assert!(text.contains("Content-Type: message/rfc822"), "{text}");
    }

    #[test]
    fn headers_only_report_leaves_the_body_out_rfc6522_section_3() {
        let rcpts = [failed()];
        let original = original();
        let report = build(&content(&rcpts, &original, Returned::Headers)).unwrap();
        let text = String::from_utf8_lossy(&report);
        assert!(text.contains("text/rfc822-headers"), "{text}");
        assert!(text.contains("Subject: hello"), "{text}");
        assert!(!text.contains("secret body"), "{text}");
    }

    #[test]
    fn delay_and_success_reports_say_so() {
        let mut delayed = failed();
        delayed.action = Action::Delayed;
        delayed.status = "4.4.1".into();
        delayed.will_retry_until = Some(1_700_400_000);
        let original = original();
        let report = build(&content(&[delayed], &original, Returned::Headers)).unwrap();
        let text = String::from_utf8_lossy(&report);
        assert!(text.contains("Subject: Delayed Mail"), "{text}");
        assert!(text.contains("Action: delayed"));
        assert!(text.contains("Will-Retry-Until:"));
        let mut ok = failed();
        ok.action = Action::Relayed;
        ok.status = "2.0.0".into();
        ok.protection = Some("TLSv1.3, verified by dane-ee, MX DNSSEC-secure".into());
        let report = build(&content(&[ok], &original, Returned::Headers)).unwrap();
        let text = String::from_utf8_lossy(&report);
        assert!(text.contains("Subject: Successful Mail Delivery Report"));
        assert!(text.contains("Action: relayed"));
        assert!(text.contains("X-Smarthost-Protection: TLSv1.3, verified by dane-ee"));
    }

    #[test]
    fn long_fields_are_folded_into_7bit_lines_rfc3464_section_2_1() {
        let long = format!("Diagnostic-Code: smtp; 550 5.7.1 {}", "word ".repeat(40));
        let folded = fold_fields(&long);
        assert!(folded.lines().all(|l| l.len() <= 72), "{folded}");
        assert!(folded.lines().skip(1).all(|l| l.starts_with(' ')));
        let unfolded: String = folded.lines().collect::<Vec<_>>().join("");
        assert_eq!(
            unfolded.split_whitespace().count(),
            long.split_whitespace().count()
        );
        let token = "x".repeat(200);
        assert!(fold_fields(&token).lines().all(|l| l.len() <= 72));
    }

    #[test]
    fn tls_required_no_is_carried_into_the_report_rfc8689_section_6() {
        let rcpts = [failed()];
        let original = original();
        let mut c = content(&rcpts, &original, Returned::Headers);
        c.tls_required_no = true;
        let text = String::from_utf8(build(&c).unwrap()).unwrap();
        assert!(text.contains("TLS-Required: No\r\n"), "{text}");
    }
}
