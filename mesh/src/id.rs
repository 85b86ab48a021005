//! Names on the mesh: node IDs and 8-byte service names.

use std::fmt;

/// Longest service name: it sits in a fixed 8-byte field of the data header.
pub const SERVICE_NAME_LEN: usize = 8;

/// A service name as carried in a data header: at most 8 bytes, NUL-padded on the wire.
///
/// Decoding strips trailing NULs only, so any byte string of up to 8 bytes is representable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ServiceName {
    bytes: [u8; SERVICE_NAME_LEN],
    len: u8,
}

/// A service name longer than 8 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service name too long: {name:?} is {len} bytes, at most 8 are allowed")]
pub struct ServiceNameError {
    /// The rejected name.
    pub name: String,
    /// Its length in bytes.
    pub len: usize,
}

impl ServiceName {
    /// Builds a name from raw bytes (at most 8).
    ///
    /// # Errors
    /// More than 8 bytes.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, ServiceNameError> {
        if raw.len() > SERVICE_NAME_LEN {
            return Err(ServiceNameError {
                name: String::from_utf8_lossy(raw).into_owned(),
                len: raw.len(),
            });
        }
        let mut bytes = [0u8; SERVICE_NAME_LEN];
        bytes[..raw.len()].copy_from_slice(raw);
        Ok(Self {
            bytes,
            len: raw.len() as u8,
        })
    }

    /// Decodes the 8-byte wire field: trailing NULs are padding.
    pub fn from_wire(field: [u8; SERVICE_NAME_LEN]) -> Self {
        let len = field.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        Self {
            bytes: field,
            len: len as u8,
        }
    }

    /// The 8-byte wire field.
    pub fn to_wire(self) -> [u8; SERVICE_NAME_LEN] {
        self.bytes
    }

    /// The name's bytes, without padding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The name as text (lossy for names that are not UTF-8).
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }
}

impl TryFrom<&str> for ServiceName {
    type Error = ServiceNameError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::from_bytes(s.as_bytes())
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

impl fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceName({:?})", self.to_string_lossy())
    }
}

/// Why a string cannot be a node ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeIdError {
    /// The empty string.
    #[error("node ID must not be empty")]
    Empty,
    /// `localhost` in any case: it is the alias for the local node.
    #[error("node ID \"{0}\" is reserved")]
    Reserved(String),
    /// A `:` would break `node:service` addresses.
    #[error("node ID \"{0}\" must not contain ':'")]
    Colon(String),
}

/// Checks that `id` can name a node on the mesh.
///
/// # Errors
/// Empty, `localhost` (any case) or containing `:`.
pub fn validate_node_id(id: &str) -> Result<(), NodeIdError> {
    if id.is_empty() {
        return Err(NodeIdError::Empty);
    }
    if id.eq_ignore_ascii_case("localhost") {
        return Err(NodeIdError::Reserved(id.to_owned()));
    }
    if id.contains(':') {
        return Err(NodeIdError::Colon(id.to_owned()));
    }
    Ok(())
}

/// Alphabet of ephemeral service names and update IDs.
const RANDOM_ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// 8 random characters from `[0-9a-zA-Z]`, as Go uses for update IDs and ephemeral services.
pub fn random_name() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..8)
        .map(|_| char::from(RANDOM_ALPHABET[rng.random_range(0..RANDOM_ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_name_pads_and_strips() {
        let name = ServiceName::try_from("ping").expect("short");
        assert_eq!(name.to_wire(), *b"ping\0\0\0\0");
        assert_eq!(ServiceName::from_wire(*b"ping\0\0\0\0"), name);
        assert_eq!(ServiceName::from_wire([0; 8]).as_bytes(), b"");
        assert!(ServiceName::try_from("toolongname").is_err());
        assert_eq!(
            ServiceName::try_from("12345678")
                .expect("8")
                .as_bytes()
                .len(),
            8
        );
    }

    #[test]
    fn node_id_rules() {
        assert!(validate_node_id("node-a").is_ok());
        assert_eq!(validate_node_id(""), Err(NodeIdError::Empty));
        assert!(validate_node_id("LocalHost").is_err());
        assert!(validate_node_id("a:b").is_err());
    }

    #[test]
    fn random_names_use_the_alphabet() {
        let n = random_name();
        assert_eq!(n.len(), 8);
        assert!(n.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
