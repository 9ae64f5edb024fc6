//! The API's tokens and what each may do: where they come from (a token file of
//! `token role [name]` lines, a variable, or one generated and written with mode 0600),
//! what a valid one looks like, the constant-time lookup every protected request passes,
//! and the role each route needs (docs/api.md, "Authentication" and "Roles").
//!
//! It owns authentication and the table of roles; it must not log a refused request's body
//! (it never reads it) nor a token, and no error it makes holds a token.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// The shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;
/// The longest token accepted.
pub const MAX_TOKEN_LEN: usize = 4096;
/// The variable read when neither a token file nor a variable is named.
pub const TOKEN_VAR: &str = "MUSTER_TOKEN";
/// The most tokens a token file may list.
pub const MAX_TOKENS: usize = 1000;
/// The longest token name.
pub const MAX_NAME_LEN: usize = 64;

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
    /// Generated and written to this file (mode 0600), by this start or an earlier one
    /// (then reused).
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

    /// Loads one token, as a client does: the first token of `file` (a token file as
    /// [`Tokens::parse`] reads it), else the variable `var`, else [`TOKEN_VAR`]; `None`
    /// when none is given or set.
    ///
    /// # Example
    /// ```
    /// use muster_serve::Token;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let f = dir.path().join("tokens");
    /// std::fs::write(&f, "# the node's tokens\n0123456789abcdef0123 viewer ci\n").unwrap();
    /// let (t, _) = Token::load(Some(&f), None).unwrap().unwrap();
    /// assert!(t.matches("0123456789abcdef0123"));
    /// ```
    pub fn load(
        file: Option<&Path>,
        var: Option<&str>,
    ) -> Result<Option<(Token, TokenSource)>, TokenError> {
        Ok(Tokens::load(file, var)?.map(|(ts, source)| (ts.entries[0].0.clone(), source)))
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

/// What a token may do. Each role may do everything the roles before it may: `viewer`
/// reads (every `GET`, the event stream, the metrics, the dashboard); `submitter` also
/// starts runs and bare tasks and cancels the runs it started; `operator` also decides
/// gates and cancels any run; `admin` may do everything.
///
/// # Example
/// ```
/// use muster_serve::Role;
///
/// let r: Role = "operator".parse().unwrap();
/// assert!(r.allows(Role::Submitter));
/// assert!(!r.allows(Role::Admin));
/// let e = "opertor".parse::<Role>().unwrap_err();
/// assert!(e.to_string().contains("did you mean `operator`"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads only.
    Viewer,
    /// Reads, starts runs and tasks, cancels its own runs.
    Submitter,
    /// Also decides gates and cancels any run.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role, from the least to the most allowed.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Submitter, Role::Operator, Role::Admin];

    /// The role's name, as a token file and the API write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Submitter => "submitter",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether a token of this role may do what needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        if let Some(r) = Role::ALL.into_iter().find(|r| r.as_str() == s) {
            return Ok(r);
        }
        // A long or odd word may be a token written in the wrong field: never echoed.
        let echo = s.len() < MIN_TOKEN_LEN
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        Err(UnknownRole {
            given: echo.then(|| s.to_string()),
            suggestion: closest_role(s),
        })
    }
}

/// A word that is not a role, with the closest role when one is close.
///
/// # Example
/// ```
/// use muster_serve::{Role, auth::UnknownRole};
///
/// let e: UnknownRole = "Admin".parse::<Role>().unwrap_err();
/// assert_eq!(e.suggestion, Some(Role::Admin));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct UnknownRole {
    /// The word, unless it looked like it could be a secret (then it is not repeated).
    pub given: Option<String>,
    /// The role it is closest to, if one is close.
    pub suggestion: Option<Role>,
}

impl fmt::Display for UnknownRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.given {
            Some(g) => write!(f, "unknown role `{g}`")?,
            None => f.write_str("the second field is not a role")?,
        }
        if let Some(r) = self.suggestion {
            write!(f, "; did you mean `{r}`?")?;
        }
        f.write_str(" (the roles: viewer, submitter, operator, admin)")
    }
}

/// The role `word` is a slip of: the same letters in another case, a prefix of two
/// letters or more, or at most two edits away.
fn closest_role(word: &str) -> Option<Role> {
    let w = word.to_ascii_lowercase();
    if w.is_empty() || w.len() > 2 * MAX_NAME_LEN {
        return None;
    }
    if w.len() >= 2
        && let Some(r) = Role::ALL.into_iter().find(|r| r.as_str().starts_with(&w))
    {
        return Some(r);
    }
    Role::ALL
        .into_iter()
        .map(|r| (edit_distance(&w, r.as_str()), r))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, r)| r)
}

/// Levenshtein distance, in bytes (the words compared are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let swap = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = swap.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Who sent a request: which token (its place in the node's list), its role and its name.
/// The authentication layer puts it in the request's extensions.
///
/// # Example
/// ```
/// use muster_serve::{Caller, Role};
///
/// let c = Caller { id: 2, role: Role::Viewer, name: Some("dash".into()) };
/// assert_eq!(c.describe(), "this token (dash) is `viewer`");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's place in the node's list (0 for a single token).
    pub id: usize,
    /// Its role.
    pub role: Role,
    /// Its name, if the token file gave one.
    pub name: Option<String>,
}

impl Caller {
    /// "this token (NAME) is `ROLE`", for a refusal.
    pub fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("this token ({n}) is `{}`", self.role),
            None => format!("this token is `{}`", self.role),
        }
    }
}

/// The role a request needs, by its method and route pattern (`/v1/runs/{id}/cancel`):
/// every read (`GET`) needs `viewer`; starting a run or a task and cancelling a run
/// `submitter` (the cancel route then lets a submitter cancel only the runs it started);
/// deciding a gate `operator`; anything else `admin`.
///
/// # Example
/// ```
/// use muster_serve::{auth::needed_role, Role};
///
/// assert_eq!(needed_role("GET", "/v1/events"), Role::Viewer);
/// assert_eq!(needed_role("POST", "/v1/runs"), Role::Submitter);
/// assert_eq!(needed_role("POST", "/v1/runs/{id}/gates/{gate}"), Role::Operator);
/// assert_eq!(needed_role("DELETE", "/v1/runs/{id}"), Role::Admin);
/// ```
pub fn needed_role(method: &str, route: &str) -> Role {
    match (method, route) {
        ("GET" | "HEAD", _) => Role::Viewer,
        (
            "POST",
            "/v1/runs" | "/v1/tasks" | "/v1/runs/{id}/cancel" | "/v1/runs/{id}/retry" | "/a2a",
        ) => Role::Submitter,
        ("POST", "/v1/runs/{id}/gates/{gate}") => Role::Operator,
        // MCP's own methods: each tool checks the role it needs (docs/mcp.md).
        (_, "/mcp") => Role::Viewer,
        _ => Role::Admin,
    }
}

/// The node's tokens, each with its role and name, looked up in constant time.
///
/// # Example
/// ```
/// use std::path::Path;
/// use muster_serve::{Role, Tokens};
///
/// let text = "# who may do what\n\
///             0123456789abcdef-admin\n\
///             0123456789abcdef-ops   operator alice\n";
/// let ts = Tokens::parse(text, Path::new("tokens.txt")).unwrap();
/// assert_eq!(ts.len(), 2);
/// let alice = ts.find("0123456789abcdef-ops").unwrap();
/// assert_eq!((alice.role, alice.name.as_deref()), (Role::Operator, Some("alice")));
/// assert_eq!(ts.find("0123456789abcdef-admin").unwrap().role, Role::Admin);
/// assert!(ts.find("0123456789abcdef-nope").is_none());
/// assert_eq!(ts.callers().filter(|c| c.role == Role::Operator).count(), 1);
/// ```
#[derive(Clone)]
pub struct Tokens {
    /// Never empty; no token twice.
    entries: Vec<(Token, Caller)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({})", self.entries.len())
    }
}

impl Tokens {
    /// One token, of role `admin` (a `--token-env` variable or a generated token).
    ///
    /// # Example
    /// ```
    /// use muster_serve::{Role, Token, Tokens};
    ///
    /// let ts = Tokens::admin(Token::parse("0123456789abcdef0123", "T").unwrap());
    /// assert_eq!(ts.find("0123456789abcdef0123").unwrap().role, Role::Admin);
    /// ```
    pub fn admin(token: Token) -> Tokens {
        Tokens {
            entries: vec![(
                token,
                Caller {
                    id: 0,
                    role: Role::Admin,
                    name: None,
                },
            )],
        }
    }

    /// Reads a token file's text (`path` names it in errors): one token a line,
    /// `token role [name]`, fields separated by spaces or tabs; a token alone is an
    /// `admin` token (a file of one token, as before roles, keeps its meaning). Blank
    /// lines and lines starting with `#` are skipped. A bad line is an error naming the
    /// file, the line and what is wrong, never the token.
    pub fn parse(text: &str, path: &Path) -> Result<Tokens, TokenError> {
        let mut entries: Vec<(Token, Caller)> = Vec::new();
        let mut lines_of: Vec<usize> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |problem: String| TokenError::Line {
                path: path.to_path_buf(),
                line: line_no,
                problem,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 3 {
                return Err(bad(format!(
                    "{} fields; a line is `token role [name]`",
                    fields.len()
                )));
            }
            let text = fields[0];
            if text.len() < MIN_TOKEN_LEN || text.len() > MAX_TOKEN_LEN {
                return Err(bad(format!(
                    "the token is {} characters long; it must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN}",
                    text.len()
                )));
            }
            if !text.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(
                    "the token must be printable ASCII without spaces".to_string()
                ));
            }
            let role = match fields.get(1) {
                None => Role::Admin,
                Some(r) => r.parse::<Role>().map_err(|e| bad(e.to_string()))?,
            };
            let name = match fields.get(2) {
                None => None,
                Some(n) => Some(check_name(n).map_err(bad)?),
            };
            if let Some(at) = entries
                .iter()
                .zip(&lines_of)
                .find(|((t, _), _)| t.matches(text))
                .map(|(_, at)| *at)
            {
                return Err(bad(format!(
                    "the same token as line {at}; list each token once"
                )));
            }
            if let Some(n) = &name
                && let Some(at) = entries
                    .iter()
                    .zip(&lines_of)
                    .find(|((_, c), _)| c.name.as_ref() == Some(n))
                    .map(|(_, at)| *at)
            {
                return Err(bad(format!(
                    "the name `{n}` is taken by line {at}; a name names one token"
                )));
            }
            if entries.len() == MAX_TOKENS {
                return Err(bad(format!("more than {MAX_TOKENS} tokens")));
            }
            let id = entries.len();
            entries.push((Token(text.to_string()), Caller { id, role, name }));
            lines_of.push(line_no);
        }
        if entries.is_empty() {
            return Err(TokenError::NoToken {
                path: path.to_path_buf(),
            });
        }
        Ok(Tokens { entries })
    }

    /// Loads the node's tokens: every line of `file` ([`Tokens::parse`]), else the
    /// variable `var`, else [`TOKEN_VAR`] (a variable holds one `admin` token); `None`
    /// when none is given or set.
    ///
    /// # Example
    /// ```
    /// use muster_serve::{Role, Tokens, TokenSource};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let f = dir.path().join("tokens");
    /// std::fs::write(&f, "0123456789abcdef0123 viewer dash\n").unwrap();
    /// let (ts, source) = Tokens::load(Some(&f), None).unwrap().unwrap();
    /// assert_eq!(ts.find("0123456789abcdef0123").unwrap().role, Role::Viewer);
    /// assert_eq!(source, TokenSource::File(f));
    /// ```
    pub fn load(
        file: Option<&Path>,
        var: Option<&str>,
    ) -> Result<Option<(Tokens, TokenSource)>, TokenError> {
        if let Some(f) = file {
            let text = std::fs::read_to_string(f).map_err(|source| TokenError::ReadFile {
                path: f.to_path_buf(),
                source,
            })?;
            let ts = Tokens::parse(&text, f)?;
            return Ok(Some((ts, TokenSource::File(f.to_path_buf()))));
        }
        let name = var.unwrap_or(TOKEN_VAR);
        match std::env::var(name) {
            Ok(v) => Ok(Some((
                Tokens::admin(Token::parse(&v, name)?),
                TokenSource::Env(name.into()),
            ))),
            Err(std::env::VarError::NotPresent) if var.is_none() => Ok(None),
            Err(std::env::VarError::NotPresent) => Err(TokenError::VarNotSet { name: name.into() }),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(TokenError::VarNotUnicode { name: name.into() })
            }
        }
    }

    /// The node's tokens when no file or variable names them: the token file at `path`
    /// when one is there (a token generated by an earlier start, perhaps given more
    /// `token role [name]` lines since: read as [`Tokens::parse`] reads any token file, and
    /// set back to mode 0600), else a new token generated into it ([`Token::generate`]),
    /// returned as the second value to be printed once. So a node restarted on the same
    /// journal keeps its token, and open dashboards and scripts keep working.
    ///
    /// # Example
    /// ```
    /// use muster_serve::Tokens;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let f = dir.path().join("token");
    /// let (first, generated) = Tokens::reuse_or_generate(&f).unwrap();
    /// let token = generated.expect("generated on the first start");
    /// let (again, generated) = Tokens::reuse_or_generate(&f).unwrap();
    /// assert!(generated.is_none());
    /// assert!(again.find(token.expose()).is_some() && first.len() == again.len());
    /// ```
    pub fn reuse_or_generate(path: &Path) -> Result<(Tokens, Option<Token>), TokenError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let ts = Tokens::parse(&text, path)?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(|source| TokenError::Write {
                            path: path.to_path_buf(),
                            source,
                        })?;
                }
                Ok((ts, None))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let t = Token::generate(path)?;
                Ok((Tokens::admin(t.clone()), Some(t)))
            }
            Err(source) => Err(TokenError::ReadFile {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The caller whose token `candidate` is, if any. Every token is compared, in constant
    /// time in its length, whichever matches: the time taken does not say which one did.
    pub fn find(&self, candidate: &str) -> Option<&Caller> {
        let mut hit = 0u32;
        let mut found = Choice::from(0);
        for (i, (t, _)) in self.entries.iter().enumerate() {
            let m = t.0.as_bytes().ct_eq(candidate.as_bytes());
            // At most MAX_TOKENS entries: the index fits.
            hit.conditional_assign(&u32::try_from(i).unwrap_or(u32::MAX), m);
            found |= m;
        }
        if bool::from(found) {
            self.entries.get(hit as usize).map(|(_, c)| c)
        } else {
            None
        }
    }

    /// How many tokens there are (at least one).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: a token list holds one token at least.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every caller, in the file's order (no token).
    pub fn callers(&self) -> impl Iterator<Item = &Caller> {
        self.entries.iter().map(|(_, c)| c)
    }
}

/// A token's name: 1 to [`MAX_NAME_LEN`] letters, digits or `-_.@`.
fn check_name(n: &str) -> Result<String, String> {
    let ok = n.len() <= MAX_NAME_LEN
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(n.to_string())
    } else {
        Err(format!(
            "the name (the third field) must be 1 to {MAX_NAME_LEN} letters, digits or `-_.@`"
        ))
    }
}

/// A token that cannot be read, checked or written; every variant names where.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Too short or too long.
    #[error(
        "{origin}: the token is {len} characters long; it must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN}"
    )]
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
    /// A line of a token file is wrong (never holds the token).
    #[error("{}:{line}: {problem}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// A token file with no token in it.
    #[error("{}: no token; each line is `token role [name]` (a token alone is an `admin`)", path.display())]
    NoToken {
        /// The file.
        path: PathBuf,
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

    const A: &str = "aaaaaaaaaaaaaaaa-admin";
    const B: &str = "bbbbbbbbbbbbbbbb-ops";

    fn parse(text: &str) -> Result<Tokens, TokenError> {
        Tokens::parse(text, Path::new("tokens.txt"))
    }

    fn refusal(text: &str) -> String {
        let e = parse(text).expect_err("the file is refused").to_string();
        for secret in [A, B, "cccccccccccccccc-x", "short"] {
            assert!(!e.contains(secret), "the error shows a token: {e}");
        }
        e
    }

    #[test]
    fn a_token_file_lists_tokens_with_roles_and_names() {
        let text = format!(
            "# the node's tokens\n\n  {A}\n\t{B}\toperator  ops-alice \r\n\
             cccccccccccccccc-x viewer\n# done\n"
        );
        let ts = parse(&text).unwrap();
        assert_eq!(ts.len(), 3);
        let a = ts.find(A).unwrap();
        assert_eq!((a.id, a.role, a.name.clone()), (0, Role::Admin, None));
        let b = ts.find(B).unwrap();
        assert_eq!(
            (b.id, b.role, b.name.as_deref()),
            (1, Role::Operator, Some("ops-alice"))
        );
        let c = ts.find("cccccccccccccccc-x").unwrap();
        assert_eq!((c.role, c.name.clone()), (Role::Viewer, None));
        assert!(ts.find("cccccccccccccccc-").is_none());
        assert!(ts.find("").is_none());
        let names: Vec<_> = ts.callers().map(|c| c.id).collect();
        assert_eq!(names, vec![0, 1, 2]);
    }

    #[test]
    fn a_file_of_one_token_alone_is_an_admin_token_as_before_roles() {
        let ts = parse(&format!("{A}\n")).unwrap();
        assert_eq!(ts.len(), 1);
        assert_eq!(ts.find(A).unwrap().role, Role::Admin);
    }

    #[test]
    fn bad_lines_are_refused_naming_the_file_the_line_and_the_problem() {
        let e = refusal(&format!("{A}\n{B} opertor bob\n"));
        assert!(e.starts_with("tokens.txt:2: "), "{e}");
        assert!(
            e.contains("unknown role `opertor`; did you mean `operator`?"),
            "{e}"
        );
        let e = refusal("# c\n\nshort viewer\n");
        assert!(e.starts_with("tokens.txt:3: "), "{e}");
        assert!(
            e.contains("5 characters long; it must be 16 to 4096"),
            "{e}"
        );
        let e = refusal(&format!("{A} admin\n{B} viewer\n{A} viewer\n"));
        assert!(
            e.starts_with("tokens.txt:3: the same token as line 1"),
            "{e}"
        );
        let e = refusal(&format!("{A} admin al\n{B} viewer al\n"));
        assert!(
            e.starts_with("tokens.txt:2: the name `al` is taken by line 1"),
            "{e}"
        );
        let e = refusal(&format!("{A} admin al extra\n"));
        assert!(e.starts_with("tokens.txt:1: 4 fields"), "{e}");
        let e = refusal(&format!("{A} admin bad/name\n"));
        assert!(e.contains("the name (the third field)"), "{e}");
        let e = refusal(&format!("{A} Admin\n"));
        assert!(e.contains("did you mean `admin`"), "{e}");
        let e = refusal(&format!("{A} view\n"));
        assert!(e.contains("did you mean `viewer`"), "{e}");
        let e = refusal(&format!("{A} root\n"));
        assert!(e.contains("unknown role `root` (the roles:"), "{e}");
        // Two tokens on a line: the second is not repeated in the error.
        let e = refusal(&format!("{A} {B}\n"));
        assert!(e.contains("the second field is not a role"), "{e}");
        let e = refusal("# only comments\n\n");
        assert!(e.starts_with("tokens.txt: no token"), "{e}");
        let e = refusal("  \n");
        assert!(e.contains("no token"), "{e}");
        let e = refusal(&format!("{A}é viewer\n"));
        assert!(e.contains("printable ASCII"), "{e}");
    }

    #[test]
    fn more_than_the_most_tokens_is_refused() {
        let text: String = (0..=MAX_TOKENS)
            .map(|i| format!("token-{i:016}\n"))
            .collect();
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(&format!("more than {MAX_TOKENS} tokens")), "{e}");
    }

    #[test]
    fn roles_are_ordered_and_routes_need_the_documented_role() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Submitter));
        assert!(Role::Submitter.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Submitter));
        assert!(!Role::Submitter.allows(Role::Operator));
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        for route in ["/v1/runs", "/v1/events", "/metrics", "/v1/whoami"] {
            assert_eq!(needed_role("GET", route), Role::Viewer);
        }
        assert_eq!(needed_role("POST", "/v1/tasks"), Role::Submitter);
        assert_eq!(needed_role("POST", "/v1/runs/{id}/cancel"), Role::Submitter);
        assert_eq!(
            needed_role("POST", "/v1/runs/{id}/gates/{gate}"),
            Role::Operator
        );
        assert_eq!(needed_role("POST", "/v1/something-new"), Role::Admin);
        assert_eq!(needed_role("PUT", "/v1/runs"), Role::Admin);
    }

    #[test]
    fn slips_of_role_names_are_suggested_and_far_words_are_not() {
        assert_eq!(closest_role("opertor"), Some(Role::Operator));
        assert_eq!(closest_role("submiter"), Some(Role::Submitter));
        assert_eq!(closest_role("ADMIN"), Some(Role::Admin));
        assert_eq!(closest_role("sub"), Some(Role::Submitter));
        assert_eq!(closest_role("root"), None);
        assert_eq!(closest_role(""), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn bearer_reads_the_scheme_case_insensitively() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
