//! Access tokens: JWTs signed with HS256, carrying who (`sub`), when (`iat`), until
//! when (`exp`) and a random id (`jti`). They carry no rights: rights are looked
//! up at each request, so a revoked grant or a removed user takes effect at once.
//!
//! Checking is strict. The algorithm is pinned to HS256 before anything else is
//! looked at, so `alg: none` and every other algorithm (HS384, HS512, RS256 with
//! the secret as a "public key", ...) are refused; `exp` and `sub` are required;
//! expiry allows [`JWT_LEEWAY_SECS`] of clock skew between nodes.
//!
//! A token whose signature checked out is remembered with its claims (up to
//! [`VERIFIED_TOKENS_MAX`] of them), so that the next request with the very same
//! bytes checks only the expiry instead of decoding and signing again: the same
//! bytes cannot check out differently. A forged or altered token is never found
//! there (a lookup compares every byte) and is checked in full each time.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::random::{self, CryptoError};
use crate::error::ApiError;

/// Seconds by which a token may be past its `exp` and still pass: covers clock
/// skew between the node that issued it and the node that checks it, no more.
pub const JWT_LEEWAY_SECS: u64 = 5;

/// The longest token looked at, in bytes. Ours are about 250; the bound keeps a
/// hostile header from costing more than it should.
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;

/// The most tokens remembered as verified. Each takes a few hundred bytes; a broker
/// with more tokens in use than this checks some of them in full again.
pub const VERIFIED_TOKENS_MAX: usize = 1024;

/// The `token_type` of every token.
pub const TOKEN_TYPE: &str = "Bearer";

/// The one algorithm tokens are signed and checked with.
const ALGORITHM: Algorithm = Algorithm::HS256;

/// Random bytes in a token id.
const JTI_RANDOM_BYTES: usize = 16;

/// The longest algorithm name repeated back in an error message.
const ALG_SHOWN_LEN_MAX: usize = 16;

/// A token as `POST /v1/auth/token` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Token {
    /// The JWT, to send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `"Bearer"`.
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

/// The claims of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// The user's name.
    pub(crate) sub: String,
    /// Issued at, Unix seconds.
    pub(crate) iat: u64,
    /// Expires at, Unix seconds.
    pub(crate) exp: u64,
    /// A random id, so no two tokens are equal (and for audit logs).
    pub(crate) jti: String,
}

impl Claims {
    /// The claims of a token for `sub` issued at `now_unix_secs`, valid `ttl_secs`.
    pub(crate) fn new(sub: &str, now_unix_secs: u64, ttl_secs: u64) -> Result<Claims, CryptoError> {
        Ok(Claims {
            sub: sub.to_owned(),
            iat: now_unix_secs,
            exp: now_unix_secs.saturating_add(ttl_secs),
            jti: random::base64url(JTI_RANDOM_BYTES)?,
        })
    }
}

/// The keys and rules that sign and check tokens.
pub(crate) struct TokenKeys {
    /// Signs new tokens.
    encoding: EncodingKey,
    /// Checks presented tokens.
    decoding: DecodingKey,
    /// HS256 only, `exp` and `sub` required, [`JWT_LEEWAY_SECS`] of leeway.
    validation: Validation,
    /// Tokens this key verified, with their claims (see the module's docs).
    verified: RwLock<HashMap<Box<str>, Arc<Claims>>>,
}

impl TokenKeys {
    /// Keys from the HMAC secret.
    pub(crate) fn new(secret: &[u8]) -> TokenKeys {
        let mut validation = Validation::new(ALGORITHM);
        validation.algorithms = vec![ALGORITHM];
        validation.leeway = JWT_LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            verified: RwLock::new(HashMap::new()),
        }
    }

    /// The signed token of `claims`.
    pub(crate) fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(ALGORITHM), claims, &self.encoding)
            .map_err(ApiError::internal)
    }

    /// The claims of a token this key signed and that has not expired; else a 401
    /// whose message says what is wrong with it.
    pub(crate) fn check(&self, token: &str) -> Result<Arc<Claims>, ApiError> {
        let known = self
            .verified
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned();
        if let Some(claims) = known
            && !is_expired(&claims, now_unix_secs())
        {
            return Ok(claims);
        }
        let claims = Arc::new(self.check_in_full(token)?);
        self.remember(token, &claims);
        Ok(claims)
    }

    /// Remembers a token that checked out; when the table is full, forgets the
    /// expired ones first, and everything if that is not enough.
    fn remember(&self, token: &str, claims: &Arc<Claims>) {
        let mut verified = self
            .verified
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= VERIFIED_TOKENS_MAX {
            let now = now_unix_secs();
            verified.retain(|_, claims| !is_expired(claims, now));
            if verified.len() >= VERIFIED_TOKENS_MAX {
                verified.clear();
            }
        }
        verified.insert(token.into(), Arc::clone(claims));
    }

    /// Checks the token's length, algorithm, signature and claims.
    fn check_in_full(&self, token: &str) -> Result<Claims, ApiError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(ApiError::unauthorized(format!(
                "the token is {} bytes long, more than the limit of {TOKEN_BYTES_MAX}",
                token.len()
            )));
        }
        check_algorithm(token)?;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| refusal(e.kind()))
    }
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").finish_non_exhaustive()
    }
}

/// The token in an `Authorization` header value (`Bearer <token>`, the scheme in
/// any case); a 401 when the header is missing or has another form.
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, ApiError> {
    let Some(value) = authorization else {
        return Err(ApiError::unauthorized(
            "no Authorization header; send \"Authorization: Bearer <token>\" with a token \
             from POST /v1/auth/token",
        ));
    };
    match value.trim().split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case(TOKEN_TYPE) && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::unauthorized(
            "the Authorization header must be \"Bearer <token>\"",
        )),
    }
}

/// Whether `claims` are past their expiry and its leeway at `now_unix_secs`, as
/// `jsonwebtoken` decides it.
fn is_expired(claims: &Claims, now_unix_secs: u64) -> bool {
    claims.exp < now_unix_secs.saturating_sub(JWT_LEEWAY_SECS)
}

/// Seconds since the Unix epoch by the system clock (0 if it is set before 1970).
pub(crate) fn now_unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Refuses a token whose header names another algorithm than HS256, with a
/// message naming it; `jsonwebtoken` would only say "malformed" for `none`.
fn check_algorithm(token: &str) -> Result<(), ApiError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("a JWT has three parts separated by '.'"));
    };
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed("its header is not base64url"))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| malformed("its header is not JSON"))?;
    let Some(alg) = header.get("alg").and_then(serde_json::Value::as_str) else {
        return Err(malformed("its header names no algorithm (\"alg\")"));
    };
    if alg == "HS256" {
        return Ok(());
    }
    if alg.eq_ignore_ascii_case("none") {
        return Err(ApiError::unauthorized(
            "the token is unsigned (alg \"none\"); only HS256-signed tokens are accepted",
        ));
    }
    let shown: String = alg
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(ALG_SHOWN_LEN_MAX)
        .collect();
    Err(ApiError::unauthorized(format!(
        "the token is signed with {shown:?}; only HS256-signed tokens are accepted"
    )))
}

/// A 401 for a token that is not a well-formed JWT.
fn malformed(why: &str) -> ApiError {
    ApiError::unauthorized(format!("the token is malformed: {why}"))
}

/// The 401 for a token `jsonwebtoken` refused.
fn refusal(kind: &ErrorKind) -> ApiError {
    match kind {
        ErrorKind::ExpiredSignature => ApiError::unauthorized(
            "the token has expired; request a new one at POST /v1/auth/token",
        ),
        ErrorKind::InvalidSignature => ApiError::unauthorized(
            "the token's signature is invalid: it was not signed with this broker's key",
        ),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            ApiError::unauthorized("the token's algorithm is not accepted; only HS256 is")
        }
        ErrorKind::MissingRequiredClaim(claim) => {
            malformed(&format!("it lacks the required claim {claim:?}"))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            malformed(&format!("its claim {claim:?} has the wrong type"))
        }
        // serde's message names the field, e.g. "missing field `exp`".
        ErrorKind::Json(e) => malformed(&format!("its claims are not as expected: {e}")),
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
            malformed("it does not decode")
        }
        _ => ApiError::unauthorized("the token is invalid"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::error::ErrorCode;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// A token for `sub` signed with `secret` under `alg`, issued `age_secs` ago
    /// and valid `ttl_secs` from then.
    pub(crate) fn forge(
        secret: &[u8],
        alg: Algorithm,
        sub: &str,
        age_secs: u64,
        ttl_secs: u64,
    ) -> String {
        let claims = Claims::new(sub, now_unix_secs() - age_secs, ttl_secs).unwrap();
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    /// An unsigned token: `{"alg":"none"}`, the claims, and an empty signature.
    pub(crate) fn unsigned(sub: &str) -> String {
        let claims = Claims::new(sub, now_unix_secs(), 3600).unwrap();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        format!("{header}.{payload}.")
    }

    fn refused(keys: &TokenKeys, token: &str) -> String {
        let error = keys.check(token).unwrap_err();
        assert_eq!(error.code, ErrorCode::Unauthorized, "{error}");
        error.message
    }

    #[test]
    fn bearer_tokens_are_taken_from_the_header() {
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Ok("abc"));
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("Basic abc"),
            Some("abc"),
        ] {
            assert_eq!(
                bearer_token(bad).unwrap_err().code,
                ErrorCode::Unauthorized,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_signed_token_checks_and_keeps_its_claims() {
        let keys = TokenKeys::new(SECRET);
        let claims = Claims::new("alice", now_unix_secs(), 3600).unwrap();
        let token = keys.sign(&claims).unwrap();
        assert_eq!(keys.check(&token), Ok(Arc::new(claims.clone())));
        assert_eq!(claims.exp - claims.iat, 3600);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
    }

    #[test]
    fn an_expired_token_is_refused_but_leeway_allows_skew() {
        let keys = TokenKeys::new(SECRET);
        let expired = forge(SECRET, Algorithm::HS256, "alice", 7200, 3600);
        assert!(refused(&keys, &expired).contains("expired"));
        let just_expired = forge(
            SECRET,
            Algorithm::HS256,
            "alice",
            10,
            10 - JWT_LEEWAY_SECS + 2,
        );
        assert!(keys.check(&just_expired).is_ok());
        let past_leeway = forge(
            SECRET,
            Algorithm::HS256,
            "alice",
            100,
            100 - JWT_LEEWAY_SECS - 2,
        );
        assert!(refused(&keys, &past_leeway).contains("expired"));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let keys = TokenKeys::new(SECRET);
        let forged = forge(
            b"another secret of thirty-two bytes",
            Algorithm::HS256,
            "alice",
            0,
            60,
        );
        assert!(refused(&keys, &forged).contains("signature"));
    }

    #[test]
    fn an_unsigned_token_is_refused() {
        let keys = TokenKeys::new(SECRET);
        assert!(refused(&keys, &unsigned("alice")).contains("\"none\""));
        let upper = unsigned("alice").replacen(
            &URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            &URL_SAFE_NO_PAD.encode(br#"{"alg":"NONE"}"#),
            1,
        );
        assert!(refused(&keys, &upper).contains("unsigned"));
    }

    #[test]
    fn other_hmac_algorithms_with_the_right_secret_are_refused() {
        let keys = TokenKeys::new(SECRET);
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let token = forge(SECRET, alg, "alice", 0, 60);
            let message = refused(&keys, &token);
            assert!(message.contains("only HS256"), "{message}");
        }
    }

    #[test]
    fn malformed_tokens_are_refused_with_a_reason() {
        let keys = TokenKeys::new(SECRET);
        let good = keys
            .sign(&Claims::new("alice", now_unix_secs(), 60).unwrap())
            .unwrap();
        let (head, rest) = good.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let no_exp = URL_SAFE_NO_PAD.encode(br#"{"sub":"alice","iat":1}"#);
        let cases = [
            ("", "three parts"),
            ("a.b", "three parts"),
            ("a.b.c.d", "three parts"),
            ("!!!.b.c", "base64url"),
            (
                &format!("{}.b.c", URL_SAFE_NO_PAD.encode(b"[1")),
                "not JSON",
            ),
            (
                &format!("{}.b.c", URL_SAFE_NO_PAD.encode(b"{}")),
                "no algorithm",
            ),
            // The signature is checked before the claims are looked at.
            (&format!("{head}.!!!.{signature}"), "signature"),
            (&format!("{head}.{no_exp}.{signature}"), "signature"),
        ];
        for (token, expected) in cases {
            let message = refused(&keys, token);
            assert!(message.contains(expected), "{token:?}: {message}");
        }
        assert!(refused(&keys, &"a".repeat(TOKEN_BYTES_MAX + 1)).contains("limit"));
    }

    #[test]
    fn a_correctly_signed_token_without_exp_is_refused() {
        let keys = TokenKeys::new(SECRET);
        #[derive(Serialize)]
        struct NoExp {
            sub: &'static str,
            iat: u64,
        }
        let claims = NoExp {
            sub: "alice",
            iat: now_unix_secs(),
        };
        let token = jsonwebtoken::encode(
            &Header::new(ALGORITHM),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let message = refused(&keys, &token);
        assert!(
            message.contains("malformed") && message.contains("`exp`"),
            "{message}"
        );
    }

    #[test]
    fn a_remembered_token_is_still_refused_once_it_expires() {
        let keys = TokenKeys::new(SECRET);
        // Valid for one more second past the leeway.
        let token = forge(
            SECRET,
            Algorithm::HS256,
            "alice",
            10,
            10 - JWT_LEEWAY_SECS + 1,
        );
        assert!(keys.check(&token).is_ok());
        assert!(keys.check(&token).is_ok(), "remembered");
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert!(refused(&keys, &token).contains("expired"));
    }

    #[test]
    fn a_token_altered_after_its_original_was_remembered_is_refused() {
        let keys = TokenKeys::new(SECRET);
        let token = keys
            .sign(&Claims::new("alice", now_unix_secs(), 3600).unwrap())
            .unwrap();
        assert!(keys.check(&token).is_ok());
        let (unsigned, signature) = token.rsplit_once('.').unwrap();
        let mut altered = signature.as_bytes().to_vec();
        altered[0] = if altered[0] == b'A' { b'B' } else { b'A' };
        let altered = format!("{unsigned}.{}", String::from_utf8(altered).unwrap());
        assert!(refused(&keys, &altered).contains("signature"));
        let other_key = forge(b"another secret", Algorithm::HS256, "alice", 0, 3600);
        assert!(refused(&keys, &other_key).contains("signature"));
        assert!(keys.check(&token).is_ok(), "the original still checks out");
    }

    #[test]
    fn the_remembered_tokens_stay_within_their_bound() {
        let keys = TokenKeys::new(SECRET);
        let now = now_unix_secs();
        for i in 0..VERIFIED_TOKENS_MAX + 10 {
            let token = keys
                .sign(&Claims::new(&format!("user{i}"), now, 3600).unwrap())
                .unwrap();
            assert_eq!(keys.check(&token).unwrap().sub, format!("user{i}"));
        }
        let remembered = keys.verified.read().unwrap().len();
        assert!(
            (1..=VERIFIED_TOKENS_MAX).contains(&remembered),
            "{remembered}"
        );
    }
}
