//! Sessions: HS256 JWTs carried in the `session` cookie or an `Authorization: Bearer` header.
//!
//! A missing, malformed, tampered, expired or wrongly signed token means "anonymous", never an
//! error; only a missing `jwt_secret` is (a 500), because that is the operator's mistake.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use spin_sdk::http::Request;

use crate::{config, errors::ApiError};

/// The name of the cookie that carries the session token.
pub const SESSION_COOKIE: &str = "session";

/// The token's payload: who is signed in, and when the session was issued and expires
/// (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub id: String,
    pub email: String,
    pub iat: u64,
    pub exp: u64,
}

/// Signs a session token for the user, valid for `ttl_seconds` from `now`.
pub fn encode_token(
    id: &str,
    email: &str,
    secret: &[u8],
    now: u64,
    ttl_seconds: u64,
) -> Result<String, ApiError> {
    let claims = Claims {
        id: id.to_owned(),
        email: email.to_owned(),
        iat: now,
        exp: now.saturating_add(ttl_seconds),
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| anyhow::anyhow!("signing a session token: {e}"))?;
    Ok(token)
}

/// The claims of a valid token, or `None` for anything else. The algorithm is fixed to HS256
/// (never taken from the token) and `exp` is checked without leeway.
pub fn decode_token(token: &str, secret: &[u8]) -> Option<Claims> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation)
        .ok()
        .map(|data| data.claims)
}

/// The value of the cookie `name` in a `Cookie` header (`a=1; session=...; b=2`).
pub fn cookie_value<'a>(cookie_header: &'a str, name: &str) -> Option<&'a str> {
    cookie_header.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim())
    })
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any case).
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The signed-in user according to the request's `Cookie` and `Authorization` headers: the
/// session cookie is tried first, then the bearer token; the first valid one wins.
pub fn user_from_headers(
    cookie_header: Option<&str>,
    authorization_header: Option<&str>,
    secret: &[u8],
) -> Option<Claims> {
    let from_cookie = cookie_header.and_then(|header| cookie_value(header, SESSION_COOKIE));
    let from_bearer = authorization_header.and_then(bearer_token);
    [from_cookie, from_bearer]
        .into_iter()
        .flatten()
        .filter(|token| !token.is_empty())
        .find_map(|token| decode_token(token, secret))
}

/// The `Set-Cookie` value that stores a session token in the browser.
pub fn session_cookie(token: &str, secure: bool) -> String {
    with_secure(
        format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax"),
        secure,
    )
}

/// The `Set-Cookie` value that ends the session (signout).
pub fn expired_session_cookie(secure: bool) -> String {
    with_secure(
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
        secure,
    )
}

fn with_secure(cookie: String, secure: bool) -> String {
    if secure {
        cookie + "; Secure"
    } else {
        cookie
    }
}

// ---- host-backed helpers (they read component variables) ----

/// A new session token for the user, signed with `jwt_secret` and valid for
/// `session_ttl_seconds`.
pub fn issue_token(id: &str, email: &str) -> Result<String, ApiError> {
    let secret = config::jwt_secret()?;
    let ttl = config::session_ttl_seconds()?;
    let now = jsonwebtoken::get_current_timestamp();
    encode_token(id, email, secret.as_bytes(), now, ttl)
}

/// The `Set-Cookie` value for a token, `Secure` when `secure_cookies` is true.
pub fn session_cookie_header(token: &str) -> Result<String, ApiError> {
    Ok(session_cookie(token, config::secure_cookies()?))
}

/// The `Set-Cookie` value that signs the browser out.
pub fn signout_cookie_header() -> Result<String, ApiError> {
    Ok(expired_session_cookie(config::secure_cookies()?))
}

/// The signed-in user, or `None` when the request is anonymous.
pub fn current_user(req: &Request) -> Result<Option<Claims>, ApiError> {
    let header = |name: &str| req.header(name).and_then(|value| value.as_str());
    let (cookie, authorization) = (header("cookie"), header("authorization"));
    if cookie.is_none() && authorization.is_none() {
        return Ok(None);
    }
    let secret = config::jwt_secret()?;
    Ok(user_from_headers(cookie, authorization, secret.as_bytes()))
}

/// The signed-in user, or 401 "Not authorized".
pub fn require_user(req: &Request) -> Result<Claims, ApiError> {
    current_user(req)?.ok_or(ApiError::NotAuthorized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

    const SECRET: &[u8] = b"test-secret";
    const NOW: u64 = 1_700_000_000;

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn valid_token() -> String {
        encode_token("64f0c0de0123456789abcdef", "a@b.co", SECRET, now(), 3600).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn issued_tokens_carry_the_user_and_expire_after_the_ttl() {
        let token = encode_token("id1", "a@b.co", SECRET, NOW, 86400).unwrap();
        let claims = jsonwebtoken::dangerous::insecure_decode::<Claims>(&token)
            .unwrap()
            .claims;
        assert_eq!(
            claims,
            Claims {
                id: "id1".into(),
                email: "a@b.co".into(),
                iat: NOW,
                exp: NOW + 86400
            }
        );
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
    }

    #[test]
    fn a_valid_token_decodes() {
        let claims = decode_token(&valid_token(), SECRET).unwrap();
        assert_eq!(claims.id, "64f0c0de0123456789abcdef");
        assert_eq!(claims.email, "a@b.co");
        assert_eq!(claims.exp - claims.iat, 3600);
    }

    #[test]
    fn a_token_signed_with_another_key_is_rejected() {
        assert_eq!(decode_token(&valid_token(), b"another-secret"), None);
    }

    #[test]
    fn a_tampered_payload_is_rejected() {
        let token = valid_token();
        let parts: Vec<&str> = token.split('.').collect();
        let forged_payload = b64(format!(
            r#"{{"id":"someone-else","email":"x@y.co","iat":{},"exp":{}}}"#,
            now(),
            now() + 3600
        )
        .as_bytes());
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(decode_token(&forged, SECRET), None);
    }

    #[test]
    fn an_expired_token_is_rejected_without_leeway() {
        let expired = encode_token("id1", "a@b.co", SECRET, now() - 100, 99).unwrap();
        assert_eq!(decode_token(&expired, SECRET), None);
        let barely_valid = encode_token("id1", "a@b.co", SECRET, now() - 100, 105).unwrap();
        assert!(decode_token(&barely_valid, SECRET).is_some());
    }

    #[test]
    fn alg_none_is_rejected() {
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = b64(format!(
            r#"{{"id":"id1","email":"a@b.co","iat":{},"exp":{}}}"#,
            now(),
            now() + 3600
        )
        .as_bytes());
        assert_eq!(decode_token(&format!("{header}.{payload}."), SECRET), None);
    }

    #[test]
    fn another_hmac_algorithm_with_the_right_key_is_rejected() {
        let claims = Claims {
            id: "id1".into(),
            email: "a@b.co".into(),
            iat: now(),
            exp: now() + 3600,
        };
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(decode_token(&hs512, SECRET), None);
    }

    #[test]
    fn garbage_and_incomplete_tokens_are_rejected() {
        let token = valid_token();
        let two_parts = token.rsplit_once('.').unwrap().0;
        for bad in ["", "garbage", "a.b", "a.b.c", two_parts, "....", "é.é.é"] {
            assert_eq!(decode_token(bad, SECRET), None, "token {bad:?}");
        }
    }

    #[test]
    fn a_token_without_exp_is_rejected() {
        let payload = serde_json::json!({"id": "id1", "email": "a@b.co", "iat": now()});
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &payload,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(decode_token(&token, SECRET), None);
    }

    #[test]
    fn cookie_value_finds_the_named_cookie_among_several() {
        let header = "theme=dark; session=abc.def.ghi; other=1";
        assert_eq!(cookie_value(header, "session"), Some("abc.def.ghi"));
        assert_eq!(cookie_value("session=tok", "session"), Some("tok"));
        assert_eq!(cookie_value("xsession=tok", "session"), None);
        assert_eq!(cookie_value("theme=dark", "session"), None);
        assert_eq!(cookie_value("session=", "session"), Some(""));
    }

    #[test]
    fn bearer_token_needs_the_bearer_scheme() {
        assert_eq!(bearer_token("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer_token("bearer  abc"), Some("abc"));
        assert_eq!(bearer_token("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[test]
    fn user_comes_from_the_cookie_or_the_bearer_header() {
        let token = valid_token();
        let cookie = format!("a=1; session={token}");
        let bearer = format!("Bearer {token}");
        assert!(user_from_headers(Some(&cookie), None, SECRET).is_some());
        assert!(user_from_headers(None, Some(&bearer), SECRET).is_some());
        // A bad cookie does not hide a good bearer token.
        assert!(user_from_headers(Some("session=garbage"), Some(&bearer), SECRET).is_some());
        assert!(user_from_headers(Some("session=garbage"), None, SECRET).is_none());
        assert!(user_from_headers(Some("session="), Some("Bearer x"), SECRET).is_none());
        assert!(user_from_headers(None, None, SECRET).is_none());
    }

    #[test]
    fn session_cookies_have_the_contract_attributes() {
        assert_eq!(
            session_cookie("tok", false),
            "session=tok; Path=/; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            session_cookie("tok", true),
            "session=tok; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
        assert_eq!(
            expired_session_cookie(false),
            "session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
        );
        assert_eq!(
            expired_session_cookie(true),
            "session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0; Secure"
        );
    }
}
