//! The API token: where it comes from (a file, a variable, or generated and written with
//! mode 0600), what a valid one looks like, and the constant-time check every protected
//! request passes.
//!
//! It owns authentication only; it must not log a refused request's body (it never reads
//! it) nor the token.

use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// The shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;
/// The longest token accepted.
pub const MAX_TOKEN_LEN: usize = 4096;
/// The variable read when neither a token file nor a variable is named.
pub const TOKEN_VAR: &str = "MUSTER_TOKEN";

/// A bearer token, checked in constant time.
///
/// # Example
/// ```
/// use muster_serve::Token;
///
/// let t = Token::parse("0123456789abcdef0123", "--token-env T").unwrap();
/// assert!(t.matches("0123456789abcdef0123"));
/// assert!(!t.matches("0123456789abcdef0124"));
/// assert!(Token::parse("short", "--token-env T").is_err());
/// ```
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Where the token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Read from a file.
    File(PathBuf),
    /// Read from an environment variable.
    Env(String),
    /// Generated and written to this file (mode 0600).
    Generated(PathBuf),
}

impl Token {
    /// Checks a token's text: 16 to 4096 printable ASCII characters, no spaces. `origin`
    /// names where it came from in the error.
    pub fn parse(text: &str, origin: &str) -> Result<Token, TokenError> {
        let t = text.trim();
        if t.len() < MIN_TOKEN_LEN || t.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Length {
                origin: origin.into(),
                len: t.len(),
            });
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Characters {
                origin: origin.into(),
            });
        }
        Ok(Token(t.to_string()))
    }

    /// Whether `candidate` is this token, compared in constant time (in the token's length).
    pub fn matches(&self, candidate: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(candidate.as_bytes()))
    }

    /// The token's text (to print it once when generated, or send it as a client).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Loads the token: from `file`, else the variable `var`, else [`TOKEN_VAR`]; `None`
    /// when none is given or set.
    pub fn load(
        file: Option<&Path>,
        var: Option<&str>,
    ) -> Result<Option<(Token, TokenSource)>, TokenError> {
        if let Some(f) = file {
            let text = std::fs::read_to_string(f).map_err(|source| TokenError::ReadFile {
                path: f.to_path_buf(),
                source,
            })?;
            let first = text.lines().next().unwrap_or("");
            let t = Token::parse(first, &f.display().to_string())?;
            return Ok(Some((t, TokenSource::File(f.to_path_buf()))));
        }
        let name = var.unwrap_or(TOKEN_VAR);
        match std::env::var(name) {
            Ok(v) => Ok(Some((
                Token::parse(&v, name)?,
                TokenSource::Env(name.into()),
            ))),
            Err(std::env::VarError::NotPresent) if var.is_none() => Ok(None),
            Err(std::env::VarError::NotPresent) => Err(TokenError::VarNotSet { name: name.into() }),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(TokenError::VarNotUnicode { name: name.into() })
            }
        }
    }

    /// Generates a random token (256 bits from the OS, hex) and writes it to `path` with
    /// mode 0600 (the parent directory is created).
    pub fn generate(path: &Path) -> Result<Token, TokenError> {
        let mut bytes = [0u8; 32];
        {
            use std::io::Read;
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut bytes))
                .map_err(|source| TokenError::Random { source })?;
        }
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| TokenError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        write_private(path, &text).map_err(|source| TokenError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Token(text))
    }
}

/// A token that cannot be read, checked or written; every variant names where.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Too short or too long.
    #[error("{origin}: the token is {len} characters long; it must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN}")]
    Length {
        /// Where it came from (a file or a variable).
        origin: String,
        /// Its length.
        len: usize,
    },
    /// Not printable ASCII, or with spaces.
    #[error("{origin}: the token must be printable ASCII without spaces")]
    Characters {
        /// Where it came from.
        origin: String,
    },
    /// The token file cannot be read.
    #[error("{}: cannot read the token file: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `--token-env NAME` names a variable that is not set.
    #[error("--token-env {name}: the variable is not set")]
    VarNotSet {
        /// The variable.
        name: String,
    },
    /// The variable's value is not UTF-8.
    #[error("{name}: the token is not valid UTF-8")]
    VarNotUnicode {
        /// The variable.
        name: String,
    },
    /// No random bytes for a generated token.
    #[error("/dev/urandom: cannot read random bytes: {source}")]
    Random {
        /// Why.
        source: std::io::Error,
    },
    /// The generated token's directory cannot be created.
    #[error("{}: cannot create the directory: {source}", dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The generated token cannot be written.
    #[error("{}: cannot write the token: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Writes `text` to a file only its owner can read (0600 from its creation on).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // An existing file keeps its mode through `open`: set it.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}

/// The bearer token of an `Authorization` header value, if it has one.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_written_for_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/token");
        let t = Token::generate(&p).unwrap();
        assert_eq!(t.expose().len(), 64);
        let back = Token::load(Some(&p), None).unwrap().unwrap().0;
        assert!(back.matches(t.expose()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn bearer_reads_the_scheme_case_insensitively() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
