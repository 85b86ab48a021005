//! Work signing and verification: RS512 JSON Web Tokens (spec §2.12).
//!
//! A token is `base64url(header).base64url(claims).base64url(signature)` with the header
//! `{"alg":"RS512","typ":"JWT"}` and the claims `{"aud":"<target node>","exp":<unix seconds>}`.
//! `aud` is written as a single string: Go's jwt v4 (`StandardClaims.Audience string`) and v5
//! (`ClaimStrings`, which accepts a string or a list) both read that form; we accept both.
//!
//! RSA comes from `ring` (constant-time, audited), not the `rsa` crate, whose private-key
//! operations are affected by RUSTSEC-2023-0071 (Marvin); see SECURITY.md. Keys are read from
//! their files on every use, as Go does, so rotating a key needs no restart, and a key that
//! does not parse only fails the operations that need it (the receptorctl tests configure
//! OpenSSH-format keys, which must not stop the node from starting).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, RsaKeyPair, UnparsedPublicKey, VerificationAlgorithm};
use serde::Deserialize;

use crate::ops::go_duration;

/// Signs work submissions for remote nodes (`work-signing`).
#[derive(Debug, Clone)]
pub struct Signer {
    key_file: PathBuf,
    expiration: Duration,
}

/// Why a signature could not be made. Messages are Go's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// No key file is configured.
    #[error("cannot sign work: signing key is empty")]
    NoKey,
    /// The key file could not be used.
    #[error("could not load signing key file: {0}")]
    Key(String),
    /// The signing operation failed.
    #[error("cannot sign work: {0}")]
    Sign(String),
}

impl Signer {
    /// A signer using the private key in `key_file` (PEM: `RSA PRIVATE KEY` or `PRIVATE KEY`),
    /// making tokens valid for `expiration`.
    pub fn new(key_file: impl Into<PathBuf>, expiration: Duration) -> Self {
        Self {
            key_file: key_file.into(),
            expiration,
        }
    }

    /// How long tokens stay valid.
    pub fn expiration(&self) -> Duration {
        self.expiration
    }

    /// A token for `audience` (the target node ID), valid from `now` for the expiration.
    ///
    /// # Errors
    /// See [`SignError`].
    pub fn sign(&self, audience: &str, now: SystemTime) -> Result<String, SignError> {
        if self.key_file.as_os_str().is_empty() {
            return Err(SignError::NoKey);
        }
        let key = load_private_key(&self.key_file).map_err(SignError::Key)?;
        let exp = unix_seconds(now)
            .saturating_add(i64::try_from(self.expiration.as_secs()).unwrap_or(i64::MAX));
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS512","typ":"JWT"}"#);
        let claims = serde_json::json!({ "aud": audience, "exp": exp });
        let claims = URL_SAFE_NO_PAD.encode(crate::gojson::to_go_json(&claims));
        let signing_input = format!("{header}.{claims}");
        let mut sig = vec![0; key.public().modulus_len()];
        key.sign(
            &signature::RSA_PKCS1_SHA512,
            &SystemRandom::new(),
            signing_input.as_bytes(),
            &mut sig,
        )
        .map_err(|_| SignError::Sign("RSA signing failed".to_owned()))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// Verifies signed work (`work-verification`).
#[derive(Debug, Clone)]
pub struct Verifier {
    key_file: PathBuf,
}

/// Why a signature was refused. Messages are Go's (spec §2.12).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A signature was sent for a work type that does not take one.
    #[error("work type did not expect a signature")]
    Unexpected,
    /// None was sent but one is required.
    #[error("could not verify signature: signature is empty")]
    Empty,
    /// Verification is required but no key is configured.
    #[error("could not verify signature: verifying key not specified")]
    NoKey,
    /// The public key file could not be used.
    #[error("could not load verifying key file: {0}")]
    Key(String),
    /// The token is malformed, its signature is wrong, or its time claims fail.
    #[error("could not verify signature: {0}")]
    Invalid(String),
    /// The token does not name this node.
    #[error("token audience did not match node ID")]
    Audience,
}

impl Verifier {
    /// A verifier using the public key in `key_file` (PEM `PUBLIC KEY`, RSA).
    pub fn new(key_file: impl Into<PathBuf>) -> Self {
        Self {
            key_file: key_file.into(),
        }
    }

    /// Checks `token` for `node_id` at `now`.
    ///
    /// # Errors
    /// See [`VerifyError`].
    pub fn verify(&self, token: &str, node_id: &str, now: SystemTime) -> Result<(), VerifyError> {
        verify(Some(&self.key_file), token, node_id, now)
    }
}

/// Go's `VerifySignature`, with an optional key file.
///
/// # Errors
/// See [`VerifyError`].
pub fn verify(
    key_file: Option<&Path>,
    token: &str,
    node_id: &str,
    now: SystemTime,
) -> Result<(), VerifyError> {
    if token.is_empty() {
        return Err(VerifyError::Empty);
    }
    let Some(key_file) = key_file.filter(|k| !k.as_os_str().is_empty()) else {
        return Err(VerifyError::NoKey);
    };
    let public_key = load_public_key(key_file).map_err(VerifyError::Key)?;
    let invalid = |text: &str| VerifyError::Invalid(text.to_owned());

    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, claims_b64, sig_b64] = parts[..] else {
        return Err(invalid("token contains an invalid number of segments"));
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .map_err(|e| VerifyError::Invalid(format!("illegal base64 data: {e}")))
    };
    #[derive(Deserialize)]
    struct Header {
        alg: Option<String>,
    }
    let header: Header = serde_json::from_slice(&decode(header_b64)?)
        .map_err(|e| VerifyError::Invalid(e.to_string()))?;
    let claims: Claims = serde_json::from_slice(&decode(claims_b64)?)
        .map_err(|e| VerifyError::Invalid(e.to_string()))?;
    let sig = decode(sig_b64)?;

    // Signature first: Go reports a bad signature in preference to bad claims.
    let algorithm: &'static dyn VerificationAlgorithm = match header.alg.as_deref() {
        Some("RS256") => &signature::RSA_PKCS1_2048_8192_SHA256,
        Some("RS384") => &signature::RSA_PKCS1_2048_8192_SHA384,
        Some("RS512") => &signature::RSA_PKCS1_2048_8192_SHA512,
        Some("PS256") => &signature::RSA_PSS_2048_8192_SHA256,
        Some("PS384") => &signature::RSA_PSS_2048_8192_SHA384,
        Some("PS512") => &signature::RSA_PSS_2048_8192_SHA512,
        Some("none") => return Err(invalid("'none' signature type is not allowed")),
        Some("HS256" | "HS384" | "HS512" | "ES256" | "ES384" | "ES512" | "EdDSA") => {
            return Err(invalid("key is of invalid type"));
        }
        _ => return Err(invalid("signing method (alg) is unavailable.")),
    };
    let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
    UnparsedPublicKey::new(algorithm, &public_key)
        .verify(signing_input.as_bytes(), &sig)
        .map_err(|_| invalid("crypto/rsa: verification error"))?;

    let now = unix_seconds(now);
    if let Some(exp) = claims.exp.map(seconds)
        && now > exp
    {
        let late = Duration::from_secs(u64::try_from(now - exp).unwrap_or(0));
        return Err(VerifyError::Invalid(format!(
            "token is expired by {}",
            go_duration(late)
        )));
    }
    if claims.iat.map(seconds).is_some_and(|iat| now < iat) {
        return Err(invalid("Token used before issued"));
    }
    if claims.nbf.map(seconds).is_some_and(|nbf| now < nbf) {
        return Err(invalid("token is not valid yet"));
    }
    let audience_ok = match &claims.aud {
        Some(Audience::One(aud)) => aud == node_id,
        Some(Audience::Many(auds)) => auds.iter().any(|a| a == node_id),
        None => false,
    };
    if audience_ok {
        Ok(())
    } else {
        Err(VerifyError::Audience)
    }
}

#[derive(Deserialize)]
struct Claims {
    aud: Option<Audience>,
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

fn seconds(value: f64) -> i64 {
    // Truncation towards zero, as Go's conversion of a JSON number to int64.
    value as i64
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

// === keys ===

/// PEM blocks in `text`: (label, DER).
fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut closed = false;
        for line in lines.by_ref() {
            let line = line.trim();
            if line == end {
                closed = true;
                break;
            }
            if line.contains(':') {
                // RFC 1421 headers (encrypted keys) are not supported.
                return Err(format!(
                    "PEM block {label} has headers (encrypted keys are not supported)"
                ));
            }
            body.push_str(line);
        }
        if !closed {
            return Err(format!("PEM block {label} is not terminated"));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| format!("PEM block {label} is not valid base64: {e}"))?;
        blocks.push((label.to_owned(), der));
    }
    Ok(blocks)
}

fn read_key_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("open {}: {}", path.display(), super::go_io_error(&e)))
}

fn load_private_key(path: &Path) -> Result<RsaKeyPair, String> {
    let text = read_key_file(path)?;
    let blocks = pem_blocks(&text)?;
    let mut keys = blocks
        .iter()
        .filter(|(label, _)| label == "RSA PRIVATE KEY" || label == "PRIVATE KEY");
    let (label, der) = keys.next().ok_or_else(|| {
        format!(
            "no RSA PRIVATE KEY or PRIVATE KEY block found in {}",
            path.display()
        )
    })?;
    if keys.next().is_some() {
        return Err(format!(
            "more than one private key found in {}",
            path.display()
        ));
    }
    let parsed = if label == "RSA PRIVATE KEY" {
        RsaKeyPair::from_der(der)
    } else {
        RsaKeyPair::from_pkcs8(der)
    };
    parsed.map_err(|e| format!("RSA private key in {} rejected: {e}", path.display()))
}

/// The PKCS#1 `RSAPublicKey` DER inside the single `PUBLIC KEY` (PKIX) block of the file.
fn load_public_key(path: &Path) -> Result<Vec<u8>, String> {
    let text = read_key_file(path)?;
    let blocks = pem_blocks(&text)?;
    let mut keys = blocks.iter().filter(|(label, _)| label == "PUBLIC KEY");
    let (_, der) = keys
        .next()
        .ok_or_else(|| format!("no PUBLIC KEY block found in {}", path.display()))?;
    if keys.next().is_some() {
        return Err(format!(
            "more than one public key found in {}",
            path.display()
        ));
    }
    let rsa = rsa_from_spki(der)
        .ok_or_else(|| format!("{} does not hold an RSA public key", path.display()))?;
    let bits = rsa_modulus_bits(rsa).unwrap_or(0);
    if bits < 2048 {
        return Err(format!(
            "the RSA key in {} has {bits} bits; at least 2048 are required",
            path.display()
        ));
    }
    Ok(rsa.to_vec())
}

/// One DER TLV: (tag, content, rest).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, tail) = rest.split_at(count);
        rest = tail;
        bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

/// `SubjectPublicKeyInfo { AlgorithmIdentifier { rsaEncryption, NULL }, BIT STRING }` →
/// the `RSAPublicKey` inside the bit string.
fn rsa_from_spki(spki: &[u8]) -> Option<&[u8]> {
    const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let (0x30, body, _) = der(spki)? else {
        return None;
    };
    let (0x30, algorithm, rest) = der(body)? else {
        return None;
    };
    let (0x06, oid, _) = der(algorithm)? else {
        return None;
    };
    if oid != RSA_ENCRYPTION {
        return None;
    }
    let (0x03, bits, _) = der(rest)? else {
        return None;
    };
    let (&0, key) = bits.split_first()? else {
        return None;
    };
    Some(key)
}

fn rsa_modulus_bits(rsa_public_key: &[u8]) -> Option<usize> {
    let (0x30, body, _) = der(rsa_public_key)? else {
        return None;
    };
    let (0x02, modulus, _) = der(body)? else {
        return None;
    };
    let modulus = match modulus.iter().position(|&b| b != 0) {
        Some(start) => &modulus[start..],
        None => return Some(0),
    };
    let top = modulus
        .first()
        .map_or(0, |&b| 8 - b.leading_zeros() as usize);
    Some((modulus.len() - 1) * 8 + top)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test-only keys, generated with `openssl genrsa 2048` for these tests.
    const PRIVATE_PKCS1: &str = include_str!("testdata/signing-pkcs1.pem");
    const PRIVATE_PKCS8: &str = include_str!("testdata/signing-pkcs8.pem");
    const PUBLIC: &str = include_str!("testdata/signing-public.pem");
    const OTHER_PUBLIC: &str = include_str!("testdata/other-public.pem");

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write key");
        path
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn sign_then_verify_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let public = write(dir.path(), "pub.pem", PUBLIC);
        for (name, key) in [("pkcs1.pem", PRIVATE_PKCS1), ("pkcs8.pem", PRIVATE_PKCS8)] {
            let signer = Signer::new(write(dir.path(), name, key), Duration::from_secs(300));
            let token = signer.sign("node-b", at(1_700_000_000)).expect("sign");
            let mut parts = token.split('.');
            assert_eq!(
                URL_SAFE_NO_PAD
                    .decode(parts.next().expect("header"))
                    .expect("b64"),
                br#"{"alg":"RS512","typ":"JWT"}"#
            );
            assert_eq!(
                URL_SAFE_NO_PAD
                    .decode(parts.next().expect("claims"))
                    .expect("b64"),
                br#"{"aud":"node-b","exp":1700000300}"#
            );
            let verifier = Verifier::new(&public);
            assert_eq!(verifier.verify(&token, "node-b", at(1_700_000_100)), Ok(()));
            assert_eq!(
                verifier.verify(&token, "node-c", at(1_700_000_100)),
                Err(VerifyError::Audience)
            );
            assert_eq!(
                verifier
                    .verify(&token, "node-b", at(1_700_003_900))
                    .map_err(|e| e.to_string()),
                Err("could not verify signature: token is expired by 1h0m0s".to_owned())
            );
        }
    }

    #[test]
    fn verification_errors_use_go_texts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = Signer::new(
            write(dir.path(), "k.pem", PRIVATE_PKCS1),
            Duration::from_secs(60),
        );
        let token = signer.sign("n", at(1000)).expect("sign");
        let wrong = Verifier::new(write(dir.path(), "other.pem", OTHER_PUBLIC));
        assert_eq!(
            wrong
                .verify(&token, "n", at(1000))
                .map_err(|e| e.to_string()),
            Err("could not verify signature: crypto/rsa: verification error".to_owned())
        );
        assert_eq!(verify(None, "", "n", at(0)), Err(VerifyError::Empty));
        assert_eq!(verify(None, "x", "n", at(0)), Err(VerifyError::NoKey));
        let missing = verify(Some(Path::new("/nonexistent/key.pem")), "x", "n", at(0));
        assert!(
            matches!(&missing, Err(VerifyError::Key(e)) if e.contains("no such file or directory")),
            "{missing:?}"
        );
        let openssh = write(
            dir.path(),
            "id_rsa.pub",
            "ssh-rsa AAAAB3NzaC1yc2E= user@host\n",
        );
        assert!(matches!(
            verify(Some(&openssh), "x", "n", at(0)),
            Err(VerifyError::Key(_))
        ));
        let public = write(dir.path(), "pub.pem", PUBLIC);
        assert_eq!(
            verify(Some(&public), "a.b", "n", at(0)).map_err(|e| e.to_string()),
            Err(
                "could not verify signature: token contains an invalid number of segments"
                    .to_owned()
            )
        );
        // A tampered payload no longer matches the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"aud":"n","exp":99999999999}"#);
        assert_eq!(
            verify(Some(&public), &parts.join("."), "n", at(0)),
            Err(VerifyError::Invalid(
                "crypto/rsa: verification error".into()
            ))
        );
    }

    #[test]
    fn signing_errors_are_clear() {
        assert_eq!(
            Signer::new("", Duration::from_secs(1)).sign("n", at(0)),
            Err(SignError::NoKey)
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let openssh = write(
            dir.path(),
            "id_rsa",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
        );
        let error = Signer::new(openssh, Duration::from_secs(1))
            .sign("n", at(0))
            .map_err(|e| e.to_string());
        assert!(
            matches!(&error, Err(e) if e.starts_with("could not load signing key file: no RSA PRIVATE KEY")),
            "{error:?}"
        );
    }

    #[test]
    fn audience_may_be_a_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let public = write(dir.path(), "pub.pem", PUBLIC);
        let key = load_private_key(&write(dir.path(), "k.pem", PRIVATE_PKCS1)).expect("key");
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS512","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(br#"{"aud":["x","n"],"exp":2000}"#);
        let input = format!("{header}.{claims}");
        let mut sig = vec![0; key.public().modulus_len()];
        key.sign(
            &signature::RSA_PKCS1_SHA512,
            &SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .expect("sign");
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig));
        assert_eq!(verify(Some(&public), &token, "n", at(1000)), Ok(()));
    }
}
