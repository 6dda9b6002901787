//! DNSSEC trust anchors from a file (`[dns] trust_anchor`).
//!
//! The file holds DNSKEY records in zone-file presentation format, as
//! `dig DNSKEY .` prints them (`. 172800 IN DNSKEY 257 3 15 base64...`);
//! `;` comments, blank lines and records split over lines with parentheses
//! are allowed. Every key given becomes an anchor for its owner name, KSK or
//! not (RFC 4035 §4.4 leaves the choice of anchors to the operator), and
//! together they replace the built-in IANA root keys.
//!
//! Each record is parsed by hickory's own trust-anchor parser; this module
//! only splits the file into records (joining parenthesised ones, which that
//! parser does not take) so that an error can name its line.

use std::path::Path;

use hickory_resolver::proto::dnssec::rdata::DNSKEY;
use hickory_resolver::proto::dnssec::{TrustAnchors, Verifier};
use hickory_resolver::proto::rr::{DNSClass, LowerName, Name};
use hickory_resolver::proto::serialize::txt::trust_anchor::{Entry, Parser};

/// A parse error: the 1-based line of the record (none for the whole file)
/// and what is wrong.
type LineError = (Option<usize>, String);

/// The keys of a trust-anchor file.
#[derive(Clone)]
pub struct TrustAnchor {
    /// The keys, in the resolver's form.
    pub(crate) anchors: TrustAnchors,
    /// The zone whose DNSKEY RRset proves that validation works: the root
    /// when any root key is given, else the owner of the first key.
    pub(crate) zone: Name,
    /// How many keys the file held.
    pub(crate) keys: usize,
}

impl std::fmt::Debug for TrustAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustAnchor")
            .field("zone", &self.zone)
            .field("keys", &self.keys)
            .finish()
    }
}

impl TrustAnchor {
    /// Reads and parses `path`. The error names the file and, for a bad
    /// record, its first line.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read trust anchor: {e}", path.display()))?;
        Self::parse(&text).map_err(|(line, why)| match line {
            Some(line) => format!("{}: line {line}: {why}", path.display()),
            None => format!("{}: {why}", path.display()),
        })
    }

    /// Parses file text; errors carry the 1-based line of the record.
    pub(crate) fn parse(text: &str) -> Result<Self, LineError> {
        let mut found = Self {
            anchors: TrustAnchors::empty(),
            zone: Name::root(),
            keys: 0,
        };
        let mut root_seen = false;
        for (line, record) in split_records(text)? {
            let entries = Parser::new(record.as_str())
                .parse()
                .map_err(|e| (Some(line), e.to_string()))?;
            for entry in entries {
                let Entry::DNSKEY(rec) = entry else {
                    return Err((Some(line), "only DNSKEY records are allowed".into()));
                };
                if rec.dns_class() != DNSClass::IN {
                    return Err((Some(line), format!("class {} is not IN", rec.dns_class())));
                }
                check_key(rec.data()).map_err(|why| (Some(line), why))?;
                let owner = rec.name().clone();
                if owner.is_root() {
                    root_seen = true;
                } else if found.keys == 0 {
                    found.zone = owner.clone();
                }
                found
                    .anchors
                    .insert_with_name(rec.data().public_key(), LowerName::from(&owner));
                found.keys += 1;
            }
        }
        if found.keys == 0 {
            return Err((None, "no DNSKEY records".into()));
        }
        if root_seen {
            found.zone = Name::root();
        }
        Ok(found)
    }
}

/// A key must be a zone key (RFC 4034 §2.1.1), not revoked (RFC 5011 §3),
/// and of an algorithm the resolver can verify.
fn check_key(key: &DNSKEY) -> Result<(), String> {
    if !key.zone_key() {
        return Err(format!(
            "DNSKEY flags {}: not a zone key (RFC 4034 section 2.1.1)",
            key.flags()
        ));
    }
    if key.revoke() {
        return Err(format!(
            "DNSKEY flags {}: the key is revoked (RFC 5011 section 3)",
            key.flags()
        ));
    }
    key.key()
        .map(drop)
        .map_err(|e| format!("unusable key (algorithm {}): {e}", key.algorithm()))
}

/// Splits the text into records with the line each starts on: a record
/// ends at the end of a line outside parentheses.
fn split_records(text: &str) -> Result<Vec<(usize, String)>, LineError> {
    let mut records = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    let mut depth = 0usize;
    for (index, line) in text.lines().enumerate() {
        // Base64 and names never hold ';', so this finds comments.
        let code = line.split(';').next().unwrap_or_default();
        if current.is_empty() {
            if code.trim().is_empty() {
                continue;
            }
            start = index + 1;
        }
        // hickory's trust-anchor parser takes one record per line, so the
        // parts are joined without their parentheses and comments.
        for c in code.chars() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    return Err((Some(index + 1), "')' without '('".into()));
                }
                ')' => depth -= 1,
                _ => {}
            }
            current.push(if c == '(' || c == ')' { ' ' } else { c });
        }
        current.push(' ');
        if depth == 0 {
            let mut record = std::mem::take(&mut current);
            record.push('\n');
            records.push((start, record));
        }
    }
    if depth > 0 {
        return Err((Some(start), "'(' is never closed".into()));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IANA root KSK 20326 (hickory's built-in copy), as `dig DNSKEY .`
    /// prints it.
    fn root_20326() -> String {
        let key = TrustAnchors::default().get(0).unwrap().clone();
        format!(". 172800 IN DNSKEY {}", DNSKEY::with_flags(257, key))
    }

    #[test]
    fn dig_output_with_comments_is_a_root_anchor() {
        let text = format!(
            "; from dig DNSKEY .\n\n{}\n   ; trailing comment\n",
            root_20326()
        );
        let ta = TrustAnchor::parse(&text).unwrap();
        assert_eq!(ta.keys, 1);
        assert!(ta.zone.is_root());
        assert_eq!(ta.anchors.len(), 1);
    }

    #[test]
    fn zone_key_anchor_is_named_after_its_owner() {
        let text = root_20326().replacen(". ", "example. ", 1);
        let ta = TrustAnchor::parse(&text).unwrap();
        assert_eq!(ta.zone, Name::from_ascii("example.").unwrap());
        // Not a root key, so the root set stays empty.
        assert!(ta.anchors.is_empty());
    }

    #[test]
    fn multi_line_record_in_parentheses() {
        let root = root_20326();
        let (head, key) = root.split_at(root.find("AwEAA").unwrap());
        let text = format!("{head}(\n  {}\n  {} ) ; KSK\n", &key[..40], &key[40..]);
        let ta = TrustAnchor::parse(&text).unwrap();
        assert_eq!(ta.keys, 1);
    }

    #[test]
    fn bad_record_names_its_line() {
        let text = format!(
            "; header\n{}\n\n. 3600 IN DNSKEY 257 3 8 !!notbase64\n",
            root_20326()
        );
        let (line, why) = TrustAnchor::parse(&text).unwrap_err();
        assert_eq!(line, Some(4), "{why}");
    }

    #[test]
    fn other_record_types_and_empty_files_are_refused() {
        let (line, _) = TrustAnchor::parse(". 3600 IN A 192.0.2.1\n").unwrap_err();
        assert_eq!(line, Some(1));
        let (line, why) = TrustAnchor::parse("; nothing\n\n").unwrap_err();
        assert_eq!(line, None);
        assert!(why.contains("no DNSKEY"), "{why}");
    }

    #[test]
    fn revoked_and_non_zone_keys_are_refused() {
        let revoked = root_20326().replacen(" 257 ", " 385 ", 1);
        let (_, why) = TrustAnchor::parse(&revoked).unwrap_err();
        assert!(why.contains("revoked"), "{why}");
        let not_zone = root_20326().replacen(" 257 ", " 1 ", 1);
        let (_, why) = TrustAnchor::parse(&not_zone).unwrap_err();
        assert!(why.contains("zone key"), "{why}");
    }

    #[test]
    fn unbalanced_parentheses() {
        let (line, _) = TrustAnchor::parse(". 1 IN DNSKEY 257 3 8 (\nAwEAAQ==\n").unwrap_err();
        assert_eq!(line, Some(1));
        let (line, _) = TrustAnchor::parse("\n. 1 IN DNSKEY 257 3 8 AwEAAQ== )\n").unwrap_err();
        assert_eq!(line, Some(2));
    }
}
