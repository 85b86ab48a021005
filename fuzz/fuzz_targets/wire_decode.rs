//! Feeds arbitrary bytes to the netceptor decoder. Whatever decodes must re-encode to bytes that
//! decode to the same message and re-encode identically (decoding never yields NaN costs, so
//! `PartialEq` on the message is exact).
#![no_main]

use libfuzzer_sys::fuzz_target;
use receptor_mesh::wire;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = wire::decode(data) else {
        return;
    };
    let encoded = msg.encode();
    assert!(!encoded.is_empty(), "encode produced an empty message");
    let again = wire::decode(&encoded).expect("a re-encoded message must decode");
    assert_eq!(again, msg, "decode(encode(m)) != m");
    assert_eq!(again.encode(), encoded, "encoding is not stable");
    // The zero-copy path must agree with the copying one.
    let shared = wire::decode_bytes(encoded).expect("decode_bytes must agree with decode");
    assert_eq!(shared, msg);
});
