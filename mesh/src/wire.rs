//! Encoding and decoding of the four netceptor message types (spec/wire.md §1–§5).
//!
//! Pure functions over byte slices: no I/O, no clock. Every backend message is exactly one
//! netceptor message whose first byte is the type.

use std::collections::BTreeMap;

use bytes::Bytes;
use highway::{HighwayHash, HighwayHasher, Key};
use time::{OffsetDateTime, UtcOffset};

use json::{Fields, Json};

mod json;
#[cfg(test)]
mod tests;

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

/// The complete reject message: the type byte and the JSON of an empty string array (§2.4).
pub const REJECT: &[u8] = b"\x03[]";
/// Most entries a routing update's `Connections` may have; larger maps are refused as hostile.
pub const MAX_CONNECTIONS: usize = 10_000;
/// `Problem` of an unreachable sent when the destination has no listener on the service.
pub const PROBLEM_SERVICE_UNKNOWN: &str = "service unknown";
/// `Problem` of an unreachable sent when the TTL ran out at a forwarding node.
pub const PROBLEM_EXPIRED: &str = "message expired";
/// `Problem` of an unreachable sent when a firewall `reject` rule matched.
pub const PROBLEM_FIREWALL: &str = "blocked by firewall";

const KIND_ROUTE: &str = "routing update";
const KIND_AD: &str = "service advertisement";
const KIND_UNREACH: &str = "unreachable";

/// HighwayHash-64 of a node ID under the all-zero key, as carried (big-endian) in data headers.
pub fn node_hash(node_id: &str) -> u64 {
    let mut hasher = HighwayHasher::new(Key([0; 4]));
    hasher.append(node_id.as_bytes());
    hasher.finalize64()
}

/// Decodes one complete netceptor message.
///
/// # Errors
/// Any malformed input gives a [`DecodeError`]; this function never panics.
pub fn decode(message: &[u8]) -> Result<Message, DecodeError> {
    decode_with(message, Bytes::copy_from_slice)
}

/// Like [`decode`], but a data message's payload shares `message`'s buffer instead of being
/// copied (the common case for QUIC-carrying datagrams).
///
/// # Errors
/// As [`decode`].
pub fn decode_bytes(message: Bytes) -> Result<Message, DecodeError> {
    decode_with(&message, |_| message.slice(HEADER_LEN..))
}

fn decode_with(
    message: &[u8],
    payload: impl FnOnce(&[u8]) -> Bytes,
) -> Result<Message, DecodeError> {
    let Some((&kind, body)) = message.split_first() else {
        return Err(DecodeError::Empty);
    };
    match kind {
        MSG_DATA => {
            let (mut data, rest) = Data::decode_header(message)?;
            data.payload = payload(rest);
            Ok(Message::Data(data))
        }
        MSG_ROUTE => RoutingUpdate::decode_json(body).map(Message::Routing),
        MSG_SERVICE_AD => ServiceAdvertisement::decode_json(body).map(Message::ServiceAd),
        // Go never looks at a reject's payload, so neither do we.
        MSG_REJECT => Ok(Message::Reject),
        other => Err(DecodeError::UnknownType(other)),
    }
}

impl Message {
    /// Encodes the message; never produces an empty buffer.
    pub fn encode(&self) -> Bytes {
        match self {
            Message::Data(d) => d.encode(),
            Message::Routing(r) => r.encode(),
            Message::ServiceAd(a) => a.encode(),
            Message::Reject => Bytes::from_static(REJECT),
        }
    }

    /// The type byte this message encodes with.
    pub fn type_byte(&self) -> u8 {
        match self {
            Message::Data(_) => MSG_DATA,
            Message::Routing(_) => MSG_ROUTE,
            Message::ServiceAd(_) => MSG_SERVICE_AD,
            Message::Reject => MSG_REJECT,
        }
    }
}

// === impl Data ===

impl Data {
    /// Encodes header and payload.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.extend_from_slice(&self.header());
        out.extend_from_slice(&self.payload);
        Bytes::from(out)
    }

    /// The 36-byte header alone (type byte included, reserved bytes zero), for callers that
    /// write header and payload separately.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = MSG_DATA;
        h[1] = self.ttl;
        // h[2..4] reserved: Go writes zeros and so do we, even when forwarding.
        h[4..12].copy_from_slice(&self.from_node.to_be_bytes());
        h[12..20].copy_from_slice(&self.to_node.to_be_bytes());
        h[20..28].copy_from_slice(&self.from_service.to_wire());
        h[28..36].copy_from_slice(&self.to_service.to_wire());
        h
    }

    /// Decodes the header of a data message and returns it with an empty payload, together with
    /// the bytes after the header. The type byte is not checked; the reserved bytes are ignored.
    ///
    /// # Errors
    /// [`DecodeError::DataTooShort`] if `message` is shorter than [`HEADER_LEN`].
    pub fn decode_header(message: &[u8]) -> Result<(Data, &[u8]), DecodeError> {
        let Some((header, rest)) = message.split_first_chunk::<HEADER_LEN>() else {
            return Err(DecodeError::DataTooShort { len: message.len() });
        };
        let field = |at: usize| -> [u8; 8] {
            let mut f = [0u8; 8];
            f.copy_from_slice(&header[at..at + 8]);
            f
        };
        let data = Data {
            ttl: header[1],
            from_node: u64::from_be_bytes(field(4)),
            to_node: u64::from_be_bytes(field(12)),
            from_service: crate::ServiceName::from_wire(field(20)),
            to_service: crate::ServiceName::from_wire(field(28)),
            payload: Bytes::new(),
        };
        Ok((data, rest))
    }
}

// === impl RoutingUpdate ===

const ROUTE_FIELDS: [&str; 7] = [
    "NodeID",
    "UpdateID",
    "UpdateEpoch",
    "UpdateSequence",
    "Connections",
    "ForwardingNode",
    "SuspectedDuplicate",
];

impl RoutingUpdate {
    /// Encodes `01` + Go-compatible compact JSON.
    pub fn encode(&self) -> Bytes {
        let mut out =
            Vec::with_capacity(160 + 16 * self.connections.as_ref().map_or(0, |c| c.len()));
        out.push(MSG_ROUTE);
        out.push(b'{');
        json::write_key(&mut out, "NodeID");
        json::write_str(&mut out, &self.node_id);
        out.push(b',');
        json::write_key(&mut out, "UpdateID");
        json::write_str(&mut out, &self.update_id);
        out.push(b',');
        json::write_key(&mut out, "UpdateEpoch");
        json::write_u64(&mut out, self.update_epoch);
        out.push(b',');
        json::write_key(&mut out, "UpdateSequence");
        json::write_u64(&mut out, self.update_sequence);
        out.push(b',');
        json::write_key(&mut out, "Connections");
        match &self.connections {
            None => out.extend_from_slice(b"null"),
            Some(conns) => {
                out.push(b'{');
                // BTreeMap iterates in byte order of the keys, which is how Go sorts map keys.
                for (i, (node, cost)) in conns.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json::write_str(&mut out, node);
                    out.push(b':');
                    json::write_f64(&mut out, *cost);
                }
                out.push(b'}');
            }
        }
        out.push(b',');
        json::write_key(&mut out, "ForwardingNode");
        json::write_str(&mut out, &self.forwarding_node);
        out.push(b',');
        json::write_key(&mut out, "SuspectedDuplicate");
        json::write_u64(&mut out, self.suspected_duplicate);
        out.push(b'}');
        Bytes::from(out)
    }

    /// Decodes the JSON body of a routing update (the message without its type byte) the way
    /// Go's `json.Unmarshal` fills the struct: missing fields stay zero, `null` leaves a field
    /// alone (and makes `Connections` nil), unknown keys are ignored.
    ///
    /// # Errors
    /// Invalid JSON, a field of the wrong type, a non-integer or negative epoch, sequence or
    /// duplicate marker, or more than [`MAX_CONNECTIONS`] connections.
    pub fn decode_json(body: &[u8]) -> Result<Self, DecodeError> {
        let f = Fields { kind: KIND_ROUTE };
        let members = f.top_object(json::parse(body, KIND_ROUTE)?)?;
        let mut u = RoutingUpdate {
            node_id: String::new(),
            update_id: String::new(),
            update_epoch: 0,
            update_sequence: 0,
            connections: None,
            forwarding_node: String::new(),
            suspected_duplicate: 0,
        };
        for (key, value) in members {
            match field_index(&key, &ROUTE_FIELDS) {
                Some(0) => f.string("NodeID", value, &mut u.node_id)?,
                Some(1) => f.string("UpdateID", value, &mut u.update_id)?,
                Some(2) => f.uint("UpdateEpoch", value, u64::MAX, &mut u.update_epoch)?,
                Some(3) => f.uint("UpdateSequence", value, u64::MAX, &mut u.update_sequence)?,
                Some(4) => {
                    f.float_map("Connections", value, MAX_CONNECTIONS, &mut u.connections)?
                }
                Some(5) => f.string("ForwardingNode", value, &mut u.forwarding_node)?,
                Some(6) => f.uint(
                    "SuspectedDuplicate",
                    value,
                    u64::MAX,
                    &mut u.suspected_duplicate,
                )?,
                _ => {}
            }
        }
        Ok(u)
    }
}

/// Which of `fields` a JSON key sets, by Go's rules (see [`json::key_matches`]).
fn field_index(key: &str, fields: &[&str]) -> Option<usize> {
    fields
        .iter()
        .position(|f| *f == key)
        .or_else(|| fields.iter().position(|f| json::key_matches(key, f)))
}

// === impl ServiceAdvertisement ===

const AD_FIELDS: [&str; 7] = [
    "NodeID",
    "Service",
    "Time",
    "ConnType",
    "Tags",
    "WorkCommands",
    "Cancel",
];
const WORK_COMMAND_FIELDS: [&str; 2] = ["WorkType", "Secure"];

impl ServiceAdvertisement {
    /// Encodes `02` + Go-compatible compact JSON.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(256);
        out.push(MSG_SERVICE_AD);
        out.push(b'{');
        json::write_key(&mut out, "NodeID");
        json::write_str(&mut out, &self.node_id);
        out.push(b',');
        json::write_key(&mut out, "Service");
        json::write_str(&mut out, &self.service);
        out.push(b',');
        json::write_key(&mut out, "Time");
        json::write_str(&mut out, &format_go_time(self.time));
        out.push(b',');
        json::write_key(&mut out, "ConnType");
        json::write_u64(&mut out, u64::from(self.conn_type));
        out.push(b',');
        json::write_key(&mut out, "Tags");
        match &self.tags {
            None => out.extend_from_slice(b"null"),
            Some(tags) => {
                out.push(b'{');
                for (i, (k, v)) in tags.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json::write_str(&mut out, k);
                    out.push(b':');
                    json::write_str(&mut out, v);
                }
                out.push(b'}');
            }
        }
        out.push(b',');
        json::write_key(&mut out, "WorkCommands");
        match &self.work_commands {
            None => out.extend_from_slice(b"null"),
            Some(cmds) => {
                out.push(b'[');
                for (i, cmd) in cmds.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'{');
                    json::write_key(&mut out, "WorkType");
                    json::write_str(&mut out, &cmd.work_type);
                    out.push(b',');
                    json::write_key(&mut out, "Secure");
                    json::write_bool(&mut out, cmd.secure);
                    out.push(b'}');
                }
                out.push(b']');
            }
        }
        out.push(b',');
        json::write_key(&mut out, "Cancel");
        json::write_bool(&mut out, self.cancel);
        out.push(b'}');
        Bytes::from(out)
    }

    /// Decodes the JSON body of a service advertisement (without its type byte), with the same
    /// Go semantics as [`RoutingUpdate::decode_json`]. A missing `Time` is Go's zero time,
    /// `0001-01-01T00:00:00Z`.
    ///
    /// # Errors
    /// Invalid JSON, a field of the wrong type, a `Time` that is not Go's RFC 3339 form, or a
    /// `ConnType` that does not fit a u8.
    pub fn decode_json(body: &[u8]) -> Result<Self, DecodeError> {
        let f = Fields { kind: KIND_AD };
        let members = f.top_object(json::parse(body, KIND_AD)?)?;
        let mut ad = ServiceAdvertisement {
            node_id: String::new(),
            service: String::new(),
            time: GO_ZERO_TIME,
            conn_type: 0,
            tags: None,
            work_commands: None,
            cancel: false,
        };
        for (key, value) in members {
            match field_index(&key, &AD_FIELDS) {
                Some(0) => f.string("NodeID", value, &mut ad.node_id)?,
                Some(1) => f.string("Service", value, &mut ad.service)?,
                Some(2) => match value {
                    Json::String(s) => {
                        ad.time = parse_go_time(&s).ok_or_else(|| {
                            f.invalid(format!("field Time: {s:?} is not an RFC 3339 time"))
                        })?;
                    }
                    Json::Null => {}
                    _ => return Err(f.invalid("field Time: not a JSON string")),
                },
                Some(3) => {
                    let mut ct = u64::from(ad.conn_type);
                    f.uint("ConnType", value, u64::from(u8::MAX), &mut ct)?;
                    ad.conn_type =
                        u8::try_from(ct).map_err(|_| f.invalid("field ConnType: out of range"))?;
                }
                Some(4) => f.string_map("Tags", value, &mut ad.tags)?,
                Some(5) => ad.work_commands = decode_work_commands(f, value)?,
                Some(6) => f.bool("Cancel", value, &mut ad.cancel)?,
                _ => {}
            }
        }
        Ok(ad)
    }
}

/// `WorkCommands`: `null` is a nil slice; a repeated key replaces the earlier array (Go would
/// reuse the earlier elements' storage, which only matters for malformed input).
fn decode_work_commands(f: Fields, value: Json) -> Result<Option<Vec<WorkCommand>>, DecodeError> {
    let items = match value {
        Json::Null => return Ok(None),
        Json::Array(items) => items,
        _ => return Err(f.invalid("field WorkCommands: not an array")),
    };
    let mut cmds = Vec::with_capacity(items.len());
    for item in items {
        let mut cmd = WorkCommand {
            work_type: String::new(),
            secure: false,
        };
        match item {
            Json::Object(members) => {
                for (key, value) in members {
                    match field_index(&key, &WORK_COMMAND_FIELDS) {
                        Some(0) => f.string("WorkCommands.WorkType", value, &mut cmd.work_type)?,
                        Some(1) => f.bool("WorkCommands.Secure", value, &mut cmd.secure)?,
                        _ => {}
                    }
                }
            }
            Json::Null => {}
            _ => return Err(f.invalid("field WorkCommands: element is not an object")),
        }
        cmds.push(cmd);
    }
    Ok(Some(cmds))
}

// === unreachable payloads ===

/// The JSON payload of a data message to the `unreach` service (§6).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unreachable {
    /// Sender of the offending message (node ID).
    pub from_node: String,
    /// Destination of the offending message (node ID).
    pub to_node: String,
    /// Sending service of the offending message.
    pub from_service: String,
    /// Destination service of the offending message.
    pub to_service: String,
    /// One of the `PROBLEM_*` strings.
    pub problem: String,
}

const UNREACH_FIELDS: [&str; 5] = ["FromNode", "ToNode", "FromService", "ToService", "Problem"];

impl Unreachable {
    /// The payload bytes: Go-compatible compact JSON, fields in Go's order.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(128);
        let values = [
            &self.from_node,
            &self.to_node,
            &self.from_service,
            &self.to_service,
            &self.problem,
        ];
        out.push(b'{');
        for (i, (name, value)) in UNREACH_FIELDS.iter().zip(values).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json::write_key(&mut out, name);
            json::write_str(&mut out, value);
        }
        out.push(b'}');
        Bytes::from(out)
    }

    /// Decodes an unreachable payload with Go's `json.Unmarshal` rules.
    ///
    /// # Errors
    /// Invalid JSON or a field that is not a string.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let f = Fields { kind: KIND_UNREACH };
        let members = f.top_object(json::parse(payload, KIND_UNREACH)?)?;
        let mut u = Unreachable::default();
        for (key, value) in members {
            let Some(i) = field_index(&key, &UNREACH_FIELDS) else {
                continue;
            };
            let (name, slot) = match i {
                0 => ("FromNode", &mut u.from_node),
                1 => ("ToNode", &mut u.to_node),
                2 => ("FromService", &mut u.from_service),
                3 => ("ToService", &mut u.to_service),
                _ => ("Problem", &mut u.problem),
            };
            f.string(name, value, slot)?;
        }
        Ok(u)
    }
}

// === Go time ===

/// Go's zero `time.Time`, which is what a missing `Time` field decodes to.
const GO_ZERO_TIME: OffsetDateTime = time::macros::datetime!(0001-01-01 0:00 UTC);

/// Formats a time the way Go's `time.Time` marshals to JSON: RFC 3339 with up to nine fractional
/// digits, trailing zeros trimmed, and `Z` for UTC.
///
/// The time is written in its own offset, as Go writes a time in its location. Go refuses to
/// marshal years outside 0–9999 (the ad would not be sent at all); such years are written
/// anyway and will not parse back.
pub fn format_go_time(t: time::OffsetDateTime) -> String {
    let (h, m, s, nanos) = t.to_hms_nano();
    let mut out = format!(
        "{:04}-{:02}-{:02}T{h:02}:{m:02}:{s:02}",
        t.year(),
        u8::from(t.month()),
        t.day()
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    let offset = t.offset().whole_seconds();
    if offset == 0 {
        out.push('Z');
    } else {
        // Go truncates the offset to whole minutes (towards zero) and signs the result, so an
        // offset of -30 s prints as +00:00.
        let mut zone = offset / 60;
        if zone < 0 {
            out.push('-');
            zone = -zone;
        } else {
            out.push('+');
        }
        out.push_str(&format!("{:02}:{:02}", zone / 60, zone % 60));
    }
    out
}

/// Parses the RFC 3339 form Go's `Time.UnmarshalJSON` accepts: `YYYY-MM-DDThh:mm:ss`, an
/// optional `.` with any number of digits (beyond nine they are truncated, as Go does), then `Z`
/// or `±hh:mm` with hours below 24. Returns `None` for anything else, and for the rare local
/// times whose UTC instant would leave year 9999.
pub fn parse_go_time(s: &str) -> Option<OffsetDateTime> {
    let b = s.as_bytes();
    let (head, mut rest) = b.split_first_chunk::<19>()?;
    let num = |from: usize, to: usize, min: u32, max: u32| -> Option<u32> {
        let digits = head.get(from..to)?;
        let mut n = 0u32;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u32::from(d - b'0');
        }
        (min..=max).contains(&n).then_some(n)
    };
    if head[4] != b'-'
        || head[7] != b'-'
        || head[10] != b'T'
        || head[13] != b':'
        || head[16] != b':'
    {
        return None;
    }
    let year = i32::try_from(num(0, 4, 0, 9999)?).ok()?;
    let month = time::Month::try_from(u8::try_from(num(5, 7, 1, 12)?).ok()?).ok()?;
    let day = u8::try_from(num(8, 10, 1, 31)?).ok()?;
    let hour = u8::try_from(num(11, 13, 0, 23)?).ok()?;
    let minute = u8::try_from(num(14, 16, 0, 59)?).ok()?;
    let second = u8::try_from(num(17, 19, 0, 59)?).ok()?;
    // Validates the day against the month, as Go's parser does.
    let date = time::Date::from_calendar_date(year, month, day).ok()?;

    let mut nanos = 0u32;
    if let [b'.', first, ..] = rest
        && first.is_ascii_digit()
    {
        let digits = rest[1..].iter().take_while(|d| d.is_ascii_digit()).count();
        for i in 0..9 {
            let d = if i < digits { rest[1 + i] - b'0' } else { 0 };
            nanos = nanos * 10 + u32::from(d);
        }
        rest = &rest[1 + digits..];
    }
    let clock = time::Time::from_hms_nano(hour, minute, second, nanos).ok()?;

    let offset = match rest {
        b"Z" => UtcOffset::UTC,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| -> Option<i8> {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| ((a - b'0') * 10 + (b - b'0')) as i8)
            };
            let (h, m) = (two(*h1, *h2)?, two(*m1, *m2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let (h, m) = if *sign == b'-' { (-h, -m) } else { (h, m) };
            UtcOffset::from_hms(h, m, 0).ok()?
        }
        _ => return None,
    };
    let t = time::PrimitiveDateTime::new(date, clock).assume_offset(offset);
    // Keep every decoded time convertible to UTC, so no later arithmetic can overflow.
    t.checked_to_offset(UtcOffset::UTC)?;
    Some(t)
}

/// Formats a float the way Go's `encoding/json` does: shortest round-trip text, no `.0` on
/// integral values, exponent form below 1e-6 and from 1e21 on.
pub fn format_go_float(value: f64) -> String {
    json::format_f64(value)
}
