//! Token authorization for koop providers, after Koop's authorization plugins
//! (`@koopjs/auth-direct-file`): users come from a file, `generateToken` trades a user's name and
//! password for a signed token that expires, and every request to the provider must carry one.
//!
//! - **Users file** ([`Users::from_file`]): JSON, `{"users": [{"username": "analyst",
//!   "password_hash": "$argon2id$v=19$…"}], "token_minutes": 60}`. Hashes are PHC strings made
//!   by [`hash_password`] (`koop hash-password`); no password is ever stored.
//! - **Tokens** ([`Authority`]): JSON Web Tokens signed with HMAC-SHA-256 (RFC 7519, RFC 7518
//!   §3.2) under a key drawn at random when the authority is made (a restart ends every
//!   session), with `sub` the user and `exp` the expiry. Verification (signature, then
//!   expiry) is constant-time in the signature; password checks run the argon2 comparison,
//!   constant-time, even for unknown users, so timing tells nothing of which names exist.
//! - **Bounded work**: argon2 costs about 19 MiB and tens of milliseconds a check, so at most
//!   [`Authority::PARALLEL_CHECKS`] checks run at once; more wait their turn.
//! - [`Secured`] wraps any [`Provider`]: `authorize` demands a valid token,
//!   `authenticates`/`authenticate` issue them; everything else is the inner provider's.
//!
//! # Example
//!
//! ```
//! use koop_auth::{Authority, Users, hash_password};
//!
//! # fn main() -> Result<(), koop_auth::AuthError> {
//! let users = Users::from_json(&format!(
//!     r#"{{"users": [{{"username": "analyst", "password_hash": "{}"}}]}}"#,
//!     hash_password("correct horse")?
//! ))?;
//! let authority = Authority::new(users)?;
//! let token = authority.issue_blocking("analyst", "correct horse")?;
//! assert_eq!(authority.verify(&token.token)?, "analyst");
//! assert!(authority.verify("forged.token.text").is_err());
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use koop_provider::{
    Credentials, Provider, ProviderData, ProviderError, ProviderRequest, ProviderStream,
    Registration, Token,
};
use serde::{Deserialize, Serialize};

/// What failed in reading users or in checking credentials and tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The users file could not be read.
    #[error("cannot read the users file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The users file is not what [`Users::from_json`] reads.
    #[error(
        "the users file is not valid: {0}; expected {{\"users\": [{{\"username\": …, \"password_hash\": \"$argon2id$…\"}}]}}"
    )]
    Invalid(String),
    /// A user's `password_hash` is not a PHC string argon2 reads.
    #[error(
        "the password hash of user {username:?} is not an argon2 PHC string ($argon2id$v=19$…): {reason}; make one with `koop hash-password`"
    )]
    BadHash {
        /// The user.
        username: String,
        /// What argon2 said.
        reason: String,
    },
    /// Unknown user, or wrong password (which of the two is not told).
    #[error("invalid username or password")]
    BadCredentials,
    /// The token is not one this server signed, or was altered.
    #[error("the token is invalid")]
    InvalidToken,
    /// The token was valid but has expired.
    #[error("the token has expired; ask generateToken for a new one")]
    Expired,
    /// Hashing, signing or drawing randomness failed.
    #[error("{0}")]
    Crypto(String),
}

/// One user of the users file.
#[derive(Debug, Clone, Deserialize)]
struct UserEntry {
    username: String,
    password_hash: String,
}

#[derive(Debug, Deserialize)]
struct UsersFile {
    users: Vec<UserEntry>,
    #[serde(default)]
    token_minutes: Option<u64>,
}

/// The users who may ask for tokens, and how long tokens last.
#[derive(Clone)]
pub struct Users {
    users: Vec<(String, String)>,
    lifetime: Duration,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field(
                "users",
                &self.users.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl Users {
    /// Default token lifetime: 60 minutes (as Koop's file auth plugin).
    pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

    /// Reads the users file at `path` (see the crate documentation for its shape).
    ///
    /// # Errors
    ///
    /// [`AuthError::Read`], then as [`Users::from_json`].
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// Reads users from JSON: `{"users": [{"username", "password_hash"}], "token_minutes"?}`.
    ///
    /// # Errors
    ///
    /// [`AuthError::Invalid`] for another shape, an empty or repeated name, no users, or
    /// `token_minutes` 0; [`AuthError::BadHash`] for a hash argon2 cannot read.
    pub fn from_json(text: &str) -> Result<Self, AuthError> {
        let file: UsersFile =
            serde_json::from_str(text).map_err(|error| AuthError::Invalid(error.to_string()))?;
        if file.users.is_empty() {
            return Err(AuthError::Invalid("it names no user".to_owned()));
        }
        let mut users: Vec<(String, String)> = Vec::new();
        for entry in file.users {
            if entry.username.is_empty() {
                return Err(AuthError::Invalid("a username is empty".to_owned()));
            }
            if users.iter().any(|(name, _)| *name == entry.username) {
                return Err(AuthError::Invalid(format!(
                    "user {:?} is listed twice",
                    entry.username
                )));
            }
            PasswordHash::new(&entry.password_hash).map_err(|error| AuthError::BadHash {
                username: entry.username.clone(),
                reason: error.to_string(),
            })?;
            users.push((entry.username, entry.password_hash));
        }
        let lifetime = match file.token_minutes {
            None => Self::DEFAULT_LIFETIME,
            Some(0) => return Err(AuthError::Invalid("token_minutes is 0".to_owned())),
            Some(minutes) => Duration::from_secs(minutes.saturating_mul(60)),
        };
        Ok(Self { users, lifetime })
    }

    fn hash_of(&self, username: &str) -> Option<&str> {
        self.users
            .iter()
            .find(|(name, _)| name == username)
            .map(|(_, hash)| hash.as_str())
    }
}

/// The argon2id PHC string of `password` with a random salt (argon2's default parameters:
/// 19 MiB, 2 passes), for the users file.
///
/// # Errors
///
/// [`AuthError::Crypto`] when no randomness is available.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|error| AuthError::Crypto(format!("hashing the password failed: {error}")))
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    iat: u64,
}

/// Issues and checks tokens for [`Users`].
#[derive(Clone)]
pub struct Authority {
    users: Arc<Users>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// A hash checked for unknown users, so that they cost what known ones do.
    decoy: Arc<str>,
    checks: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

impl Authority {
    /// Password checks running at once; more wait.
    pub const PARALLEL_CHECKS: usize = 2;

    /// An authority for `users`, signing with a fresh random 256-bit key.
    ///
    /// # Errors
    ///
    /// [`AuthError::Crypto`] when no randomness is available.
    pub fn new(users: Users) -> Result<Self, AuthError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|error| AuthError::Crypto(format!("no randomness for the key: {error}")))?;
        let key_error = |error: jsonwebtoken::errors::Error| {
            AuthError::Crypto(format!("the signing key was refused: {error}"))
        };
        Ok(Self {
            users: Arc::new(users),
            encoding: EncodingKey::from_secret(&secret).map_err(key_error)?,
            decoding: DecodingKey::from_secret(&secret).map_err(key_error)?,
            decoy: hash_password("an unknown user's password")?.into(),
            checks: Arc::new(tokio::sync::Semaphore::new(Self::PARALLEL_CHECKS)),
        })
    }

    /// How long the tokens it issues last.
    pub fn lifetime(&self) -> Duration {
        self.users.lifetime
    }

    /// Checks `password` of `username` and issues a token, on this thread (argon2: tens of
    /// milliseconds). `expires` is in milliseconds since the Unix epoch.
    ///
    /// # Errors
    ///
    /// [`AuthError::BadCredentials`]; [`AuthError::Crypto`] when signing fails.
    pub fn issue_blocking(&self, username: &str, password: &str) -> Result<Token, AuthError> {
        let known = self.users.hash_of(username);
        let hash = known.unwrap_or(&self.decoy);
        let verified = PasswordHash::new(hash).ok().is_some_and(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        });
        if !(verified && known.is_some()) {
            return Err(AuthError::BadCredentials);
        }
        let issued = now_seconds();
        let expires = issued.saturating_add(self.users.lifetime.as_secs());
        let claims = Claims {
            sub: username.to_owned(),
            exp: expires,
            iat: issued,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
                .map_err(|error| AuthError::Crypto(format!("signing the token failed: {error}")))?;
        Ok(Token {
            token,
            expires: expires.saturating_mul(1000),
            ssl: false,
        })
    }

    /// As [`Authority::issue_blocking`], on a blocking thread, at most
    /// [`Authority::PARALLEL_CHECKS`] at once.
    ///
    /// # Errors
    ///
    /// As [`Authority::issue_blocking`].
    pub async fn issue(&self, username: &str, password: &str) -> Result<Token, AuthError> {
        let _permit = self
            .checks
            .acquire()
            .await
            .map_err(|_| AuthError::Crypto("the authority is closed".to_owned()))?;
        let (authority, username, password) =
            (self.clone(), username.to_owned(), password.to_owned());
        tokio::task::spawn_blocking(move || authority.issue_blocking(&username, &password))
            .await
            .map_err(|error| AuthError::Crypto(format!("the password check failed: {error}")))?
    }

    /// The user a token was issued to, when it is one this authority signed and it has not
    /// expired (no leeway).
    ///
    /// # Errors
    ///
    /// [`AuthError::InvalidToken`] or [`AuthError::Expired`].
    pub fn verify(&self, token: &str) -> Result<String, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation) {
            Ok(data) => Ok(data.claims.sub),
            Err(error) => match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Err(AuthError::Expired),
                _ => Err(AuthError::InvalidToken),
            },
        }
    }
}

/// A provider whose data needs a token from [`Authority`]: `generateToken` issues them, every
/// other request is refused without a valid one (`Unauthorized`: Geoservices 498 for an invalid
/// or expired token, 499 for none).
pub struct Secured<P> {
    inner: P,
    authority: Authority,
}

impl<P> std::fmt::Debug for Secured<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secured")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl<P: Provider> Secured<P> {
    /// `inner`, for holders of tokens of `authority`.
    pub fn new(inner: P, authority: Authority) -> Self {
        Self { inner, authority }
    }
}

#[async_trait]
impl<P: Provider> Provider for Secured<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn registration(&self) -> Registration {
        self.inner.registration()
    }

    async fn get_data(&self, request: &ProviderRequest) -> Result<ProviderData, ProviderError> {
        self.inner.get_data(request).await
    }

    async fn get_stream(&self, request: &ProviderRequest) -> Result<ProviderStream, ProviderError> {
        self.inner.get_stream(request).await
    }

    fn prefers_stream(&self) -> bool {
        self.inner.prefers_stream()
    }

    fn create_key(&self, request: &ProviderRequest) -> String {
        self.inner.create_key(request)
    }

    async fn authorize(&self, request: &ProviderRequest) -> Result<(), ProviderError> {
        let Some(token) = request.token.as_deref() else {
            return Err(ProviderError::unauthorized("a token is required"));
        };
        match self.authority.verify(token) {
            Ok(user) => {
                tracing::debug!(user, path = request.path, "authorized");
                self.inner.authorize(request).await
            }
            Err(error) => Err(ProviderError::unauthorized(error.to_string())),
        }
    }

    fn authenticates(&self) -> bool {
        true
    }

    async fn authenticate(&self, credentials: &Credentials) -> Result<Token, ProviderError> {
        self.authority
            .issue(&credentials.username, &credentials.password)
            .await
            .map_err(|error| match error {
                AuthError::BadCredentials => ProviderError::unauthorized(error.to_string()),
                other => ProviderError::internal(other.to_string(), None),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(minutes: u64) -> Users {
        let hash = hash_password("s3cret").expect("a hash");
        Users::from_json(&format!(
            r#"{{"users": [{{"username": "analyst", "password_hash": "{hash}"}}], "token_minutes": {minutes}}}"#
        ))
        .expect("users")
    }

    #[test]
    fn the_right_password_gets_a_token_and_nothing_else_does() {
        let authority = Authority::new(users(5)).expect("an authority");
        let token = authority
            .issue_blocking("analyst", "s3cret")
            .expect("a token");
        assert_eq!(authority.verify(&token.token).expect("valid"), "analyst");
        let expires_in = token.expires / 1000 - now_seconds();
        assert!((290..=300).contains(&expires_in), "{expires_in}");
        for (user, password) in [("analyst", "wrong"), ("nobody", "s3cret"), ("", "")] {
            assert!(matches!(
                authority.issue_blocking(user, password),
                Err(AuthError::BadCredentials)
            ));
        }
    }

    #[test]
    fn altered_foreign_and_expired_tokens_are_refused() {
        let authority = Authority::new(users(5)).expect("an authority");
        let token = authority
            .issue_blocking("analyst", "s3cret")
            .expect("a token")
            .token;
        // Another authority (another key, as after a restart) did not sign it.
        let other = Authority::new(users(5)).expect("another");
        assert!(matches!(other.verify(&token), Err(AuthError::InvalidToken)));
        // One character of the signature changed.
        let mut altered = token.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).expect("ascii");
        assert!(matches!(
            authority.verify(&altered),
            Err(AuthError::InvalidToken)
        ));
        // Signed by this authority but expired a second ago.
        let claims = Claims {
            sub: "analyst".to_owned(),
            exp: now_seconds() - 1,
            iat: now_seconds() - 100,
        };
        let expired =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &authority.encoding)
                .expect("signed");
        assert!(matches!(
            authority.verify(&expired),
            Err(AuthError::Expired)
        ));
        // "alg": "none" is never accepted.
        let unsigned = format!(
            "{}.{}.",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0",
            token.split('.').nth(1).unwrap_or_default()
        );
        assert!(authority.verify(&unsigned).is_err());
    }

    #[test]
    fn users_files_are_checked_when_read() {
        for (text, expected) in [
            ("{}", "users"),
            (r#"{"users": []}"#, "no user"),
            (
                r#"{"users": [{"username": "a", "password_hash": "plain"}]}"#,
                "argon2",
            ),
            (
                r#"{"users": [{"username": "a", "password": "plain"}]}"#,
                "password_hash",
            ),
        ] {
            let error = Users::from_json(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
        let hash = hash_password("x").expect("a hash");
        let twice = format!(
            r#"{{"users": [{{"username": "a", "password_hash": "{hash}"}}, {{"username": "a", "password_hash": "{hash}"}}]}}"#
        );
        assert!(Users::from_json(&twice).is_err());
        // Debug never shows a hash.
        let debug = format!("{:?}", users(1));
        assert!(!debug.contains("argon2"), "{debug}");
    }
}
