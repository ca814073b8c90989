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

/// SHA-256 (FIPS 180-4) of `s`, lower-case hex.
pub fn sha256_hex(s: &str) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ];
    let mut h: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    let mut msg = s.as_bytes().to_vec();
    let bit_len = (msg.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            (hh, g, f, e, d, c, b, a) = (g, f, e, d.wrapping_add(t1), c, b, a, t1.wrapping_add(t2));
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
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
