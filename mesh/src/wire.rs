//! Encoding and decoding of the four netceptor message types (spec/wire.md §1–§5).
//!
//! Pure functions over byte slices: no I/O, no clock. Every backend message is exactly one
//! netceptor message whose first byte is the type.

use std::collections::BTreeMap;

use bytes::Bytes;

/// Type byte of a data message.
pub const MSG_DATA: u8 = 0;
/// Type byte of a routing update.
pub const MSG_ROUTE: u8 = 1;
/// Type byte of a service advertisement.
pub const MSG_SERVICE_AD: u8 = 2;
/// Type byte of a reject.
pub const MSG_REJECT: u8 = 3;
/// Length of the data message header.
pub const HEADER_LEN: usize = 36;
/// Largest message a TCP/TLS frame can carry (u16 length prefix).
pub const MAX_FRAMED_LEN: usize = 65535;

/// One decoded netceptor message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Type 0: a datagram between services.
    Data(Data),
    /// Type 1: a link-state routing update.
    Routing(RoutingUpdate),
    /// Type 2: a service advertisement (or its cancellation).
    ServiceAd(ServiceAdvertisement),
    /// Type 3: the peer refuses this session.
    Reject,
}

/// A data message: the 36-byte header and an opaque payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// Hops to live; decremented by every node that forwards (or originates) the message.
    pub ttl: u8,
    /// HighwayHash-64 of the sending node's ID.
    pub from_node: u64,
    /// HighwayHash-64 of the destination node's ID.
    pub to_node: u64,
    /// Sending service.
    pub from_service: crate::ServiceName,
    /// Destination service.
    pub to_service: crate::ServiceName,
    /// Everything after the header.
    pub payload: Bytes,
}

/// A routing update (type 1). Field order and names follow Go's JSON encoding exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingUpdate {
    /// Originator of the update.
    pub node_id: String,
    /// 8 random characters, unique per update; used for flood suppression.
    pub update_id: String,
    /// Originator's incarnation (`unix_secs << 24 | rand24`); larger is newer.
    pub update_epoch: u64,
    /// Originator's sequence number within the epoch.
    pub update_sequence: u64,
    /// Originator's established links and their costs; `None` encodes as JSON `null`.
    pub connections: Option<BTreeMap<String, f64>>,
    /// The node that put this copy on the link.
    pub forwarding_node: String,
    /// 0, or the epoch suspected of being a duplicate node.
    pub suspected_duplicate: u64,
}

/// A service advertisement (type 2).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceAdvertisement {
    /// Advertising node.
    pub node_id: String,
    /// Service name (at most 8 bytes on the mesh, not enforced here).
    pub service: String,
    /// The version of the advertisement: a newer time replaces an older advertisement.
    pub time: time::OffsetDateTime,
    /// 0 datagram, 1 stream, 2 stream with user TLS.
    pub conn_type: u8,
    /// Free-form tags, e.g. `{"type":"Control Service"}`; `None` encodes as `null`.
    pub tags: Option<BTreeMap<String, String>>,
    /// Work types offered by a control service; `None` encodes as `null`.
    pub work_commands: Option<Vec<WorkCommand>>,
    /// Withdraws the service.
    pub cancel: bool,
}

/// One work type in a control service's advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkCommand {
    /// Name of the work type.
    pub work_type: String,
    /// Whether submissions must be signed.
    pub secure: bool,
}

/// Why a received message could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A zero-length message (Go would crash on it; we drop it).
    #[error("empty message")]
    Empty,
    /// A data message shorter than its 36-byte header.
    #[error("data message too short: {len} bytes")]
    DataTooShort {
        /// Length received.
        len: usize,
    },
    /// A type byte other than 0 to 3.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// The JSON body of a routing update, advertisement or reject is invalid.
    #[error("invalid {kind} JSON")]
    Json {
        /// Which message it was.
        kind: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The JSON parsed but a field has a value Go would refuse (or that we refuse as hostile).
    #[error("invalid {kind}: {reason}")]
    Invalid {
        /// Which message it was.
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// HighwayHash-64 of a node ID under the all-zero key, as carried (big-endian) in data headers.
pub fn node_hash(node_id: &str) -> u64 {
    todo!("{node_id}")
}

/// Decodes one complete netceptor message.
///
/// # Errors
/// Any malformed input gives a [`DecodeError`]; this function never panics.
pub fn decode(message: &[u8]) -> Result<Message, DecodeError> {
    todo!("{}", message.len())
}

impl Message {
    /// Encodes the message; never produces an empty buffer.
    pub fn encode(&self) -> Bytes {
        todo!()
    }
}

impl Data {
    /// Encodes header and payload.
    pub fn encode(&self) -> Bytes {
        todo!()
    }
}

impl RoutingUpdate {
    /// Encodes `01` + Go-compatible compact JSON.
    pub fn encode(&self) -> Bytes {
        todo!()
    }
}

impl ServiceAdvertisement {
    /// Encodes `02` + Go-compatible compact JSON.
    pub fn encode(&self) -> Bytes {
        todo!()
    }
}

/// Formats a time the way Go's `time.Time` marshals to JSON: RFC 3339 with up to nine fractional
/// digits, trailing zeros trimmed, and `Z` for UTC.
pub fn format_go_time(t: time::OffsetDateTime) -> String {
    todo!("{t}")
}

/// Formats a float the way Go's `encoding/json` does: shortest round-trip text, no `.0` on
/// integral values, exponent form below 1e-6 and from 1e21 on.
pub fn format_go_float(value: f64) -> String {
    todo!("{value}")
}
