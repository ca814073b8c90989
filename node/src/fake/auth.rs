//! RTSP authentication for the fake cameras: HTTP Digest (RFC 2617, MD5, with `qop=auth` or
//! the RFC 2069 form without qop; RFC 7616 SHA-256 when the client says `algorithm=SHA-256`)
//! and Basic. Pure: the nonce is chosen by the caller. SHA-256 is a small local implementation
//! (the workspace has no SHA-2 dependency for this crate); it only authenticates test clients.

use base64::Engine as _;
use md5::{Digest as _, Md5};

pub const REALM: &str = "camrec";

/// Credentials the fleet requires, and the nonce it hands out in challenges.
#[derive(Debug, Clone)]
pub struct Authenticator {
    username: String,
    password: String,
    nonce: String,
}

impl Authenticator {
    pub fn new(username: String, password: String, nonce: String) -> Authenticator {
        Authenticator { username, password, nonce }
    }

    /// The `WWW-Authenticate` value of a 401 response.
    pub fn challenge(&self) -> String {
        format!("Digest realm=\"{REALM}\", nonce=\"{}\", algorithm=MD5, qop=\"auth\"", self.nonce)
    }

    /// The nonce handed out in challenges.
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// `Quirk::DigestVariants`: the two `WWW-Authenticate` values of a 401, in order: SHA-256
    /// only with the algorithm quoted, then MD5; neither offers `qop`. With `stale`, both carry
    /// `stale=TRUE` (a fresh nonce mid-session).
    pub fn challenges_variant(nonce: &str, stale: bool) -> [String; 2] {
        let stale = if stale { ", stale=TRUE" } else { "" };
        [
            format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=\"SHA-256\"{stale}"),
            format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=MD5{stale}"),
        ]
    }

    /// Checks an `Authorization` header value for a request with this method.
    pub fn check(&self, method: &str, authorization: Option<&str>) -> bool {
        self.check_nonce(method, authorization, &self.nonce)
    }

    /// [`Authenticator::check`] against a given nonce.
    pub fn check_nonce(&self, method: &str, authorization: Option<&str>, current_nonce: &str) -> bool {
        let Some(value) = authorization.map(str::trim) else { return false };
        let Some((scheme, rest)) = value.split_once(' ') else { return false };
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
                return false;
            };
            return decoded == format!("{}:{}", self.username, self.password).as_bytes();
        }
        if !scheme.eq_ignore_ascii_case("digest") {
            return false;
        }
        let params = parse_params(rest);
        let get = |k: &str| params.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str());
        let (Some(username), Some(nonce), Some(uri), Some(response)) =
            (get("username"), get("nonce"), get("uri"), get("response"))
        else {
            return false;
        };
        if username != self.username || nonce != current_nonce || get("realm").is_some_and(|r| r != REALM) {
            return false;
        }
        let h: fn(&str) -> String = match get("algorithm") {
            None => md5_hex,
            Some(a) if a.eq_ignore_ascii_case("md5") => md5_hex,
            Some(a) if a.eq_ignore_ascii_case("sha-256") => sha256_hex,
            Some(_) => return false,
        };
        let ha1 = h(&format!("{}:{REALM}:{}", self.username, self.password));
        let ha2 = h(&format!("{method}:{uri}"));
        let expected = match get("qop") {
            Some(qop) if qop.eq_ignore_ascii_case("auth") => {
                let (Some(nc), Some(cnonce)) = (get("nc"), get("cnonce")) else { return false };
                h(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))
            }
            Some(_) => return false,
            None => h(&format!("{ha1}:{nonce}:{ha2}")),
        };
        expected.eq_ignore_ascii_case(response)
    }
}

pub fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `s`, lower-case hex (RFC 7616 digest with `algorithm=SHA-256`).
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses `k1="v1", k2=v2` auth parameters; quoted values may contain commas and `\"`.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect::<String>().trim().to_owned();
        if name.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                value.push(c);
            }
            value = value.trim().to_owned();
        }
        out.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new("user".into(), "pass".into(), "abc123".into())
    }

    #[test]
    fn fake_auth_digest_with_qop() {
        let a = auth();
        let ha1 = md5_hex("user:camrec:pass");
        let ha2 = md5_hex("DESCRIBE:rtsp://h/cam/0");
        let resp = md5_hex(&format!("{ha1}:abc123:00000001:xyz:auth:{ha2}"));
        let hdr = format!(
            "Digest username=\"user\", realm=\"camrec\", nonce=\"abc123\", uri=\"rtsp://h/cam/0\", \
             response=\"{resp}\", qop=auth, nc=00000001, cnonce=\"xyz\""
        );
        assert!(a.check("DESCRIBE", Some(&hdr)));
        assert!(!a.check("SETUP", Some(&hdr)));
    }

    #[test]
    fn fake_auth_digest_without_qop() {
        let a = auth();
        let ha1 = md5_hex("user:camrec:pass");
        let ha2 = md5_hex("OPTIONS:rtsp://h/cam/1");
        let resp = md5_hex(&format!("{ha1}:abc123:{ha2}"));
        let hdr = format!(
            "Digest username=\"user\", realm=\"camrec\", nonce=\"abc123\", uri=\"rtsp://h/cam/1\", response=\"{resp}\""
        );
        assert!(a.check("OPTIONS", Some(&hdr)));
        assert!(!a.check("OPTIONS", Some(&hdr.replace("abc123", "other"))));
        let wrong = Authenticator::new("user".into(), "nope".into(), "abc123".into());
        assert!(!wrong.check("OPTIONS", Some(&hdr)));
    }

    #[test]
    fn fake_auth_sha256_vectors_and_digest() {
        assert_eq!(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let long = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(sha256_hex(long), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
        let a = auth();
        let ha1 = sha256_hex("user:camrec:pass");
        let ha2 = sha256_hex("OPTIONS:rtsp://h/cam/1");
        let resp = sha256_hex(&format!("{ha1}:n2:{ha2}"));
        let hdr = format!(
            "Digest username=\"user\", realm=\"camrec\", nonce=\"n2\", uri=\"rtsp://h/cam/1\", \
             algorithm=SHA-256, response=\"{resp}\""
        );
        assert!(a.check_nonce("OPTIONS", Some(&hdr), "n2"));
        assert!(!a.check("OPTIONS", Some(&hdr)), "other nonce");
        assert!(!a.check_nonce("OPTIONS", Some(&hdr.replace("SHA-256", "MD5")), "n2"));
    }

    #[test]
    fn fake_auth_basic_and_garbage() {
        let a = auth();
        assert!(a.check("PLAY", Some("Basic dXNlcjpwYXNz")));
        assert!(!a.check("PLAY", Some("Basic dXNlcjp3cm9uZw==")));
        assert!(!a.check("PLAY", None));
        for junk in ["", "Digest", "Digest ,,,", "Digest a=\"unterminated", "Bearer x", "Basic !!!"] {
            assert!(!a.check("PLAY", Some(junk)), "{junk}");
        }
    }
}
