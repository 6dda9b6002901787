//! The subject common-name fallback for DANE-TA name checks (RFC 7672
//! §3.2.3): when a certificate carries no DNS-ID, the last (most specific)
//! CN of its subject is matched against the reference names instead.
//!
//! webpki no longer looks at the CN at all, and exposes the subject only as
//! raw DER, so this module walks that DER itself. The walk is deliberately
//! small (definite lengths, tags below 31, the three string types a CN
//! holding a host name uses) rather than pulling in an X.509 parser for one
//! attribute; anything it does not understand yields no name, which makes
//! the check fail closed.

/// The id-at-commonName OID (2.5.4.3), as encoded content octets.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_UTF8_STRING: u8 = 0x0c;
const TAG_PRINTABLE_STRING: u8 = 0x13;
const TAG_IA5_STRING: u8 = 0x16;

/// Splits one DER TLV off the front of `input`: (tag, content, rest).
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-octet tag: not used in a Name
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None; // indefinite or absurd length
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The last CN in `subject`, the content of the subject Name SEQUENCE (as
/// `webpki::Cert::subject` gives it), if it is a printable ASCII string.
pub(super) fn last_common_name(subject: &[u8]) -> Option<String> {
    let mut found = None;
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (tag, mut set, rest) = read_tlv(rdns)?;
        if tag != TAG_SET {
            return None;
        }
        rdns = rest;
        while !set.is_empty() {
            let (tag, attribute, rest) = read_tlv(set)?;
            if tag != TAG_SEQUENCE {
                return None;
            }
            set = rest;
            let (tag, oid, value) = read_tlv(attribute)?;
            if tag != TAG_OID || oid != OID_CN {
                continue;
            }
            let (tag, text, _) = read_tlv(value)?;
            let string_tag = matches!(tag, TAG_UTF8_STRING | TAG_PRINTABLE_STRING | TAG_IA5_STRING);
            found = if string_tag && text.iter().all(|b| b.is_ascii_graphic()) {
                std::str::from_utf8(text).ok().map(str::to_owned)
            } else {
                None
            };
        }
    }
    found
}

/// Whether a presented name (a CN) matches `reference` (an A-label name):
/// equal ignoring ASCII case and a trailing dot, or a `*` that is the
/// whole left-most label standing for exactly one label (RFC 7672 §3.2.3,
/// RFC 6125 §6.4.3).
pub(super) fn name_matches(presented: &str, reference: &str) -> bool {
    let presented = presented.trim_end_matches('.').to_ascii_lowercase();
    let reference = reference.trim_end_matches('.').to_ascii_lowercase();
    if presented.is_empty() || reference.is_empty() {
        return false;
    }
    match presented.strip_prefix("*.") {
        Some(parent) => {
            let Some((label, rest)) = reference.split_once('.') else {
                return false;
            };
            // A wildcard never covers a bare top-level or public suffix
            // here: at least two labels must remain after it.
            !label.is_empty() && rest == parent && parent.contains('.') && !parent.contains('*')
        }
        None => !presented.contains('*') && presented == reference,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes one short TLV.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag, u8::try_from(content.len()).unwrap()];
        out.extend_from_slice(content);
        out
    }

    fn rdn(oid: &[u8], tag: u8, value: &str) -> Vec<u8> {
        let mut attribute = tlv(TAG_OID, oid);
        attribute.extend(tlv(tag, value.as_bytes()));
        tlv(TAG_SET, &tlv(TAG_SEQUENCE, &attribute))
    }

    const OID_O: &[u8] = &[0x55, 0x04, 0x0a];

    #[test]
    fn last_cn_is_taken_rfc7672_section_3_2_3() {
        let mut subject = rdn(OID_CN, TAG_PRINTABLE_STRING, "first.example.org");
        subject.extend(rdn(OID_O, TAG_UTF8_STRING, "Example Org"));
        subject.extend(rdn(OID_CN, TAG_UTF8_STRING, "mx.example.org"));
        assert_eq!(
            last_common_name(&subject).as_deref(),
            Some("mx.example.org")
        );
    }

    #[test]
    fn no_cn_or_odd_cn_gives_nothing() {
        assert_eq!(last_common_name(&rdn(OID_O, TAG_UTF8_STRING, "Org")), None);
        assert_eq!(last_common_name(&[]), None);
        // BMPString is not read.
        assert_eq!(last_common_name(&rdn(OID_CN, 0x1e, "mx")), None);
        // Non-ASCII or spaces are not host names.
        assert_eq!(
            last_common_name(&rdn(OID_CN, TAG_UTF8_STRING, "Test CA")),
            None
        );
        // Truncated DER.
        let subject = rdn(OID_CN, TAG_UTF8_STRING, "mx.example.org");
        assert_eq!(last_common_name(&subject[..subject.len() - 1]), None);
    }

    #[test]
    fn long_form_lengths_are_read() {
        let name = format!("{}.example.org", "a".repeat(50));
        let mut attribute = tlv(TAG_OID, OID_CN);
        attribute.extend(tlv(TAG_UTF8_STRING, name.as_bytes()));
        // SEQUENCE with a long-form (0x81) length.
        let mut seq = vec![TAG_SEQUENCE, 0x81, u8::try_from(attribute.len()).unwrap()];
        seq.extend(attribute);
        let mut set = vec![TAG_SET, 0x81, u8::try_from(seq.len()).unwrap()];
        set.extend(seq);
        assert_eq!(last_common_name(&set), Some(name));
    }

    #[test]
    fn names_match_exactly_or_by_one_label_wildcard_rfc6125_section_6_4_3() {
        assert!(name_matches("mx.example.org", "mx.example.org"));
        assert!(name_matches("MX.Example.ORG.", "mx.example.org"));
        assert!(name_matches("*.example.org", "mx.example.org"));
        assert!(!name_matches("*.example.org", "a.mx.example.org"));
        assert!(!name_matches("*.example.org", "example.org"));
        assert!(!name_matches("*.org", "example.org"));
        assert!(!name_matches("m*.example.org", "mx.example.org"));
        assert!(!name_matches("mx.example.org", "mx.example.net"));
        assert!(!name_matches("", ""));
    }
}
