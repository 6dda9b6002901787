//! Credentials for SMTP AUTH (RFC 4954) on the listener: the
//! `[listen] auth_file`, a TOML table of `name = "<PHC string>"` with
//! argon2 (`$argon2id$...`) or bcrypt (`$2b$...`) hashes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordVerifier};

/// An auth file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFileError {
    /// It could not be read.
    #[error("{path}: cannot read the auth file: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not a TOML table of strings.
    #[error("{path}: line {line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A value is not a hash we can check.
    #[error("{path}: {user}: not an argon2 or bcrypt hash in PHC/modular crypt format")]
    BadHash {
        /// The file.
        path: PathBuf,
        /// The user whose entry is bad.
        user: String,
    },
}

/// The users who may authenticate, with their password hashes.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    users: BTreeMap<String, String>,
}

fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|p| hash.starts_with(p))
}

impl Credentials {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the file's text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, AuthFileError> {
        let users: BTreeMap<String, String> =
            toml::from_str(text).map_err(|e| AuthFileError::Parse {
                path: path.to_owned(),
                line: e.span().map_or(1, |s| {
                    text.as_bytes()[..s.start.min(text.len())]
                        .iter()
                        .filter(|&&b| b == b'\n')
                        .count()
                        + 1
                }),
                message: e.message().trim().to_owned(),
            })?;
        for (user, hash) in &users {
            if !is_bcrypt(hash) && PasswordHash::new(hash).is_err() {
                return Err(AuthFileError::BadHash {
                    path: path.to_owned(),
                    user: user.clone(),
                });
            }
        }
        Ok(Self { users })
    }

    /// True when `user` exists and `password` matches its hash. Slow by
    /// design (the hash's work factor): call it off the async threads.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        if is_bcrypt(hash) {
            return bcrypt::verify(password, hash).unwrap_or(false);
        }
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};

    #[test]
    fn argon2_and_bcrypt_hashes_verify() {
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let a = argon2::Argon2::default()
            .hash_password(b"secret1", &salt)
            .unwrap()
            .to_string();
        let b = bcrypt::hash("secret2", 4).unwrap();
        let text = format!("alice = {a:?}\nbob = {b:?}\n");
        let creds = Credentials::parse(&text, Path::new("auth.toml")).unwrap();
        assert!(creds.verify("alice", "secret1"));
        assert!(!creds.verify("alice", "secret2"));
        assert!(creds.verify("bob", "secret2"));
        assert!(!creds.verify("bob", "secret1"));
        assert!(!creds.verify("carol", "secret1"));
    }

    #[test]
    fn bad_files_name_file_line_and_user() {
        let e = Credentials::parse("alice = \"plain\"\n", Path::new("a.toml")).unwrap_err();
        assert!(e.to_string().contains("a.toml: alice"), "{e}");
        let e = Credentials::parse("x\n", Path::new("a.toml")).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
