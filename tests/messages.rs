//! Real-world messages through the whole path: each file in
//! `tests/data/messages/` is piped into `sendmail -t -i`, delivered by a
//! queue run to a fake MX, and must arrive as it went in, byte for byte,
//! with only what submission must change: CRLF line ends (RFC 5321
//! §2.3.8), a final line end, no mbox `From ` line, no `Bcc:`,
//! `Resent-Bcc:`, `Return-Path:` or `Content-Length:` field, and
//! smarthost's own `Received:` trace field in front (RFC 5321 §4.4).
//!
//! Every message file has its own test, carries To/From/Date/Message-ID
//! (so submission adds nothing), and has recipients only in domains the
//! test zone routes to the fake MX. Lines over 998 octets may be
//! re-encoded; they are tested separately at the end.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mail_parser::{Address, MessageParser, MimeHeaders};
use support::world::{zone, World, MX1};
use support::ReceivedMessage;

/// Fields submission always removes (Bcc, Resent-Bcc, Return-Path, Content-Length).
const DROPPED: &[&str] = &["Bcc", "Resent-Bcc", "Return-Path", "Content-Length"];

/// The longest line allowed on the wire, CRLF not counted (RFC 5322 §2.1.1).
const MAX_LINE: usize = 998;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/messages")
}

fn read_message(name: &str) -> Vec<u8> {
    let path = data_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every line ended by CRLF, a final line end added when missing.
fn to_crlf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 16);
    let body = input.strip_suffix(b"\n").unwrap_or(input);
    if input.is_empty() {
        return out;
    }
    for line in body.split(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The header fields of a CRLF message (each with its continuation lines
/// and line ends) and the rest, starting with the empty line.
fn split_fields(message: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut fields: Vec<&[u8]> = Vec::new();
    let mut at = 0;
    let mut field_start = 0;
    while at < message.len() {
        let end = message[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(message.len(), |i| at + i + 2);
        let line = &message[at..end];
        if line == b"\r\n" {
            break;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation && at > field_start {
            fields.push(&message[field_start..at]);
            field_start = at;
        }
        at = end;
    }
    if at > field_start {
        fields.push(&message[field_start..at]);
    }
    (fields, &message[at..])
}

fn field_name(field: &[u8]) -> String {
    let colon = field.iter().position(|&b| b == b':').unwrap_or(0);
    String::from_utf8_lossy(&field[..colon]).trim().to_string()
}

/// The message as it must arrive, trace field not included.
fn expected_on_arrival(input: &[u8]) -> Vec<u8> {
    let mut crlf = to_crlf(input);
    if crlf.starts_with(b"From ") {
        let first_end = crlf.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        crlf.drain(..first_end);
    }
    let (fields, rest) = split_fields(&crlf);
    let mut out = Vec::with_capacity(crlf.len());
    for field in fields {
        let name = field_name(field);
        if !DROPPED.iter().any(|d| d.eq_ignore_ascii_case(&name)) {
            out.extend_from_slice(field);
        }
    }
    out.extend_from_slice(rest);
    out
}

/// Checks that `prefix` is nothing but `Received:` fields, the first one
/// smarthost's own.
fn assert_only_trace_fields(prefix: &[u8]) {
    let (fields, rest) = split_fields(prefix);
    let shown = String::from_utf8_lossy(prefix);
    assert!(rest.is_empty(), "the prefix is header fields: {shown:?}");
    assert!(!fields.is_empty(), "a Received: field was prepended");
    for field in &fields {
        assert!(
            field_name(field).eq_ignore_ascii_case("Received"),
            "only Received: fields were added: {shown:?}"
        );
    }
    let first = String::from_utf8_lossy(fields[0]);
    assert!(
        first.starts_with("Received: by client.example.net"),
        "{first:?}"
    );
}

/// All addresses in the To, Cc and Bcc fields, lower-cased.
fn header_recipients(input: &[u8]) -> BTreeSet<String> {
    let parsed = MessageParser::default()
        .parse(input)
        .expect("mail-parser reads the input");
    let mut all = BTreeSet::new();
    for list in [parsed.to(), parsed.cc(), parsed.bcc()]
        .into_iter()
        .flatten()
    {
        let addrs: Vec<_> = match list {
            Address::List(l) => l.iter().collect(),
            Address::Group(g) => g.iter().flat_map(|g| g.addresses.iter()).collect(),
        };
        for a in addrs {
            if let Some(address) = &a.address {
                all.insert(address.to_ascii_lowercase());
            }
        }
    }
    all
}

/// A world whose zone routes every recipient domain used by the message
/// files to MX1.
fn world() -> World {
    World::new(zone().mx("lists.example.org", 10, "mx1.example.org"), "")
}

/// Submits `input` with `sendmail -t -i`, runs the queue, and returns
/// every transaction the fake MX received, checking that the queue is
/// empty afterwards and that the recipients are those of the headers.
fn deliver(input: &[u8]) -> Vec<ReceivedMessage> {
    let world = world();
    let mx = world.mx(MX1, "mx1.example.org").start();
    world.send_bytes(&["-t", "-i"], input);
    world.queue_run(&[]);
    let expected_rcpts = header_recipients(input);
    let domains: BTreeSet<&str> = expected_rcpts
        .iter()
        .filter_map(|r| r.rsplit_once('@').map(|(_, d)| d))
        .collect();
    let got = mx.wait_for_messages(domains.len(), Duration::from_secs(10));
    let listing = world.mailq();
    assert!(listing.contains("Mail queue is empty"), "{listing}");
    let rcpts: BTreeSet<String> = got
        .iter()
        .flat_map(|m| m.rcpt_addrs())
        .map(|a| a.to_ascii_lowercase())
        .collect();
    assert_eq!(rcpts, expected_rcpts, "envelope recipients from -t");
    got
}

/// Delivers a message file and checks every transaction's content.
fn assert_arrives_intact(name: &str) -> Vec<ReceivedMessage> {
    let input = read_message(name);
    let expected = expected_on_arrival(&input);
    let got = deliver(&input);
    for m in &got {
        assert!(
            m.data.ends_with(&expected),
            "{name}: content changed on the way\n--- expected (after the trace field)\n{}\n--- got\n{}",
            String::from_utf8_lossy(&expected),
            m.data_str()
        );
        assert_only_trace_fields(&m.data[..m.data.len() - expected.len()]);
    }
    got
}

/// The names of every message file and the test covering it.
const MESSAGE_FILES: &[&str] = &[
    "bcc-removed.eml",
    "crlf-line-ends.eml",
    "dots-and-from-lines.eml",
    "empty-body.eml",
    "lf-line-ends-cron.eml",
    "many-headers-mailing-list.eml",
    "mbox-from-line-first.eml",
    "mixed-line-ends.eml",
    "mixed-pdf-attachment.eml",
    "newsletter-alternative.eml",
    "no-final-newline.eml",
    "rfc2047-encoded-words.eml",
    "utf8-8bit-german-japanese.eml",
];

#[test]
fn every_message_file_has_a_test() {
    let mut on_disk: Vec<String> = std::fs::read_dir(data_dir())
        .expect("list tests/data/messages")
        .map(|e| e.expect("directory entry").file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".eml"))
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, MESSAGE_FILES);
}

#[test]
fn expected_content_helper_converts_removes_and_keeps() {
    // The comparison above is only as good as this helper.
    let input = b"From x@y Mon\nReturn-Path: <a@b>\r\nTo: t@example.org\nBcc: a@example.org,\n b@example.org\nSubject: s\n\n.x\nlast";
    assert_eq!(
        expected_on_arrival(input),
        b"To: t@example.org\r\nSubject: s\r\n\r\n.x\r\nlast\r\n"
    );
    assert_eq!(to_crlf(b""), b"");
    assert_eq!(to_crlf(b"a\r\n\nb"), b"a\r\n\r\nb\r\n");
}

#[test]
fn multipart_alternative_newsletter_arrives_byte_for_byte_rfc2046_section_5_1_4() {
    assert_arrives_intact("newsletter-alternative.eml");
}

#[test]
fn multipart_mixed_with_base64_pdf_arrives_byte_for_byte_rfc2045_section_6_8() {
    let got = assert_arrives_intact("mixed-pdf-attachment.eml");
    // The attachment still decodes to a PDF.
    let parsed = MessageParser::default().parse(&got[0].data).unwrap();
    let pdf = parsed
        .attachments()
        .find(|a| a.attachment_name() == Some("invoice-2024-0613.pdf"))
        .expect("the attachment");
    assert!(pdf.contents().starts_with(b"%PDF-1.4\n"));
    assert!(pdf.contents().ends_with(b"%%EOF\n"));
}

#[test]
fn eight_bit_utf8_body_arrives_byte_for_byte_with_body_8bitmime_rfc6152_section_3() {
    let got = assert_arrives_intact("utf8-8bit-german-japanese.eml");
    assert!(
        got[0].mail_params.iter().any(|p| p == "BODY=8BITMIME"),
        "MAIL FROM parameters: {:?}",
        got[0].mail_params
    );
    let parsed = MessageParser::default().parse(&got[0].data).unwrap();
    let text = parsed.body_text(0).unwrap();
    assert!(text.contains("Grüße gehen an Frau Groß"), "{text}");
    assert!(text.contains("大阪への出張のため"), "{text}");
}

#[test]
fn rfc2047_encoded_subject_and_display_names_arrive_byte_for_byte_rfc2047_section_2() {
    let got = assert_arrives_intact("rfc2047-encoded-words.eml");
    let parsed = MessageParser::default().parse(&got[0].data).unwrap();
    assert_eq!(
        parsed.subject(),
        Some("Einladung: Sommerfest am Wörthsee 🎉 – bitte bis 20. Juni zusagen")
    );
    let from = parsed.from().and_then(|f| f.first()).unwrap();
    assert_eq!(from.name.as_deref(), Some("Jörg Müller"));
}

#[test]
fn forty_plus_headers_with_received_chain_dkim_and_list_fields_arrive_byte_for_byte() {
    let input = read_message("many-headers-mailing-list.eml");
    let crlf = to_crlf(&input);
    let (fields, _) = split_fields(&crlf);
    assert!(fields.len() >= 40, "{} header fields", fields.len());
    let got = assert_arrives_intact("many-headers-mailing-list.eml");
    let data = got[0].data_str();
    // RFC 5321 §4.4: Return-Path belongs to the final delivery; a new one
    // must not travel with the message.
    assert!(!data.contains("Return-Path:"));
    assert!(data.contains("DKIM-Signature: v=1; a=rsa-sha256;"));
}

#[test]
fn dot_and_from_lines_in_the_body_arrive_intact_rfc5321_section_4_5_2() {
    let got = assert_arrives_intact("dots-and-from-lines.eml");
    // The last line is a lone dot; with -i it is data, and on the wire
    // it was stuffed to "..".
    assert!(got[0].data.ends_with(b"single dot:\r\n.\r\n"));
    assert!(got[0].raw_data.ends_with(b"single dot:\r\n..\r\n"));
}

#[test]
fn crlf_message_arrives_byte_for_byte_rfc5321_section_2_3_8() {
    let input = read_message("crlf-line-ends.eml");
    assert!(input.windows(2).any(|w| w == b"\r\n"), "the file has CRLF");
    assert_arrives_intact("crlf-line-ends.eml");
}

#[test]
fn lf_message_arrives_with_crlf_line_ends_rfc5321_section_2_3_8() {
    let input = read_message("lf-line-ends-cron.eml");
    assert!(!input.contains(&b'\r'), "the file has bare LF");
    let got = assert_arrives_intact("lf-line-ends-cron.eml");
    assert!(!got[0]
        .data
        .split(|&b| b == b'\n')
        .any(|l| !l.is_empty() && !l.ends_with(b"\r")));
}

#[test]
fn mixed_line_ends_arrive_as_crlf_rfc5321_section_2_3_8() {
    assert_arrives_intact("mixed-line-ends.eml");
}

#[test]
fn empty_body_message_arrives_byte_for_byte() {
    let got = assert_arrives_intact("empty-body.eml");
    assert!(got[0].data.ends_with(b"charset=us-ascii\r\n\r\n"));
}

#[test]
fn missing_final_newline_is_added_rfc5321_section_4_1_1_4() {
    let input = read_message("no-final-newline.eml");
    assert!(!input.ends_with(b"\n"));
    let got = assert_arrives_intact("no-final-newline.eml");
    assert!(got[0].data.ends_with(b"Orders pending: 17\r\n"));
}

#[test]
fn bcc_field_is_removed_and_bcc_recipients_still_get_the_message_rfc5322_section_3_6_3() {
    let got = assert_arrives_intact("bcc-removed.eml");
    let data = got[0].data_str();
    assert!(!data.contains("Bcc:"), "{data}");
    assert!(!data.contains("auditor@example.org"), "{data}");
    assert!(!data.contains("legal@example.org"), "{data}");
    let mut rcpts = got[0].rcpt_addrs();
    rcpts.sort();
    assert_eq!(
        rcpts,
        [
            "auditor@example.org",
            "board@example.org",
            "legal@example.org"
        ]
    );
}

#[test]
fn mbox_from_separator_line_is_dropped() {
    let got = assert_arrives_intact("mbox-from-line-first.eml");
    assert!(!got[0].data_str().contains("From mailer-daemon@example.net"));
}

// ---------------------------------------------------------------------------
// Lines over 998 octets
// ---------------------------------------------------------------------------

/// A line of `len` octets of words, ending in a word character (no
/// trailing white space, which quoted-printable would have to protect).
fn long_line(len: usize) -> String {
    let mut line = String::with_capacity(len + 16);
    let mut n = 0;
    while line.len() < len {
        line.push_str(&format!("word{n} "));
        n += 1;
    }
    line.truncate(len - 1);
    let line = line.trim_end().to_string();
    let pad = len - line.len();
    format!("{line}{}", "x".repeat(pad))
}

fn assert_lines_fit(data: &[u8]) {
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        let content = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(
            content.len() <= MAX_LINE,
            "line {} has {} octets",
            i + 1,
            content.len()
        );
    }
}

#[test]
fn body_line_of_5000_octets_arrives_within_998_and_decodes_to_the_original_rfc5322_section_2_1_1() {
    let long = long_line(5000);
    assert_eq!(long.len(), 5000);
    let body = format!("Before the long line.\n{long}\nAfter the long line.\n");
    let message = format!(
        "From: Exporter <export@example.net>\nTo: data@example.org\n\
         Subject: CSV export in one line\nDate: Sat, 29 Jun 2024 12:00:00 +0000\n\
         Message-ID: <long-line-5000@example.net>\nMIME-Version: 1.0\n\
         Content-Type: text/plain; charset=us-ascii\n\n{body}"
    );
    let got = deliver(message.as_bytes());
    assert_eq!(got.len(), 1);
    assert_lines_fit(&got[0].data);
    assert_lines_fit(&got[0].raw_data);
    let parsed = MessageParser::default()
        .parse(&got[0].data)
        .expect("the arrived message parses");
    assert_eq!(
        parsed
            .header_raw("Content-Transfer-Encoding")
            .map(str::trim),
        Some("quoted-printable")
    );
    let text = parsed.body_text(0).expect("a text body");
    assert_eq!(text, body.replace('\n', "\r\n"));
    // Nothing else changed: the header fields are still there as sent.
    assert!(got[0]
        .data_str()
        .contains("\r\nSubject: CSV export in one line\r\n"));
}

#[test]
fn long_line_in_one_mime_part_is_reencoded_and_the_other_parts_stay_intact_rfc2045_section_6_7() {
    let long = long_line(3000);
    let attachment = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n";
    let first = "This part is short and stays as it is.\n";
    let message = format!(
        "From: a@example.net\nTo: b@example.org\nSubject: parts\n\
         Date: Sat, 29 Jun 2024 12:00:00 +0000\nMessage-ID: <parts-1@example.net>\n\
         MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\n\
         --b1\nContent-Type: text/plain; charset=us-ascii\n\n{first}\
         --b1\nContent-Type: text/plain; charset=us-ascii\n\n{long}\n\
         --b1\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n\
         {attachment}--b1--\n"
    );
    let got = deliver(message.as_bytes());
    let data = &got[0].data;
    assert_lines_fit(data);
    let crlf = |s: &str| s.replace('\n', "\r\n");
    let text = String::from_utf8_lossy(data);
    assert!(
        text.contains(&crlf(&format!("\n\n{first}--b1\n"))),
        "{text}"
    );
    assert!(
        text.contains(&crlf(&format!("\n\n{attachment}--b1--\n"))),
        "{text}"
    );
    let parsed = MessageParser::default().parse(data).unwrap();
    let long_part = parsed
        .parts
        .iter()
        .find(|p| p.text_contents().is_some_and(|t| t.contains("word0 word1")))
        .expect("the long part");
    assert_eq!(long_part.text_contents().unwrap().trim_end(), long);
    let binary = parsed.attachments().next().expect("the attachment");
    assert_eq!(binary.contents(), b"ABCDEFGHIJKLMNOPQRSTUVWXYZ");
}

#[test]
fn header_line_over_998_octets_is_folded_and_unfolds_to_the_same_value_rfc5322_section_2_2_3() {
    let ids: Vec<String> = (0..60)
        .map(|i| format!("<thread-{i:03}.part@lists.example.net>"))
        .collect();
    let references = ids.join(" ");
    assert!(references.len() > MAX_LINE);
    let message = format!(
        "From: a@example.net\nTo: b@example.org\nSubject: long thread\n\
         Date: Sat, 29 Jun 2024 12:00:00 +0000\nMessage-ID: <thread-060@example.net>\n\
         References: {references}\n\nreply\n"
    );
    let got = deliver(message.as_bytes());
    let data = &got[0].data;
    assert_lines_fit(data);
    let (fields, rest) = split_fields(data);
    assert_eq!(rest, b"\r\nreply\r\n");
    let field = fields
        .iter()
        .find(|f| field_name(f) == "References")
        .expect("References is still there");
    // RFC 5322 §2.2.3: unfolding removes each CRLF that precedes WSP.
    let unfolded = String::from_utf8_lossy(field)
        .replace("\r\n ", " ")
        .replace("\r\n\t", "\t");
    assert_eq!(unfolded, format!("References: {references}\r\n"));
}
