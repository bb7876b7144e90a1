//! What a worker writes on its channel: a header is judged alone, and a
//! body parses into a message that round-trips, or is refused.
#![no_main]

use greffon_protocol::{FRAME_HEADER_LEN, Message, decode_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.get(..FRAME_HEADER_LEN) {
        let header: [u8; FRAME_HEADER_LEN] = header.try_into().expect("four bytes");
        if let Ok(len) = decode_header(header, 1 << 20) {
            assert!(len > 0 && len <= 1 << 20);
        }
    }
    if let Ok(m) = Message::from_json(data) {
        assert_eq!(Message::from_json(&m.to_json()).expect("re-parses"), m);
    }
});
