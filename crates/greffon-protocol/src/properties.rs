//! Property tests of the framing and the messages (issue #18): a frame
//! round-trips, a header is judged before any body is read, and no byte
//! string makes the parser panic. `scripts/fuzz` runs them longer.

use crate::{ErrorKind, encode_frame, encode_request};
use crate::{FRAME_HEADER_LEN, FrameError, Message, ResponseBody, WireError, decode_header};
use proptest::prelude::*;
use serde_json::Value;

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn any_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u64>(), "[a-z.]{1,16}", any_json(), any::<bool>()).prop_map(
            |(id, method, params, reply_on_main)| Message::Request {
                id,
                method,
                params,
                reply_on_main,
            }
        ),
        (any::<u64>(), any_json()).prop_map(|(id, v)| Message::Response {
            id,
            body: ResponseBody::Ok(v),
            output: None,
        }),
        (any::<u64>(), ".{0,40}").prop_map(|(id, message)| Message::Response {
            id,
            body: ResponseBody::Err(WireError::new(ErrorKind::Exception, message)),
            output: None,
        }),
        ("[a-z.]{1,16}", any_json())
            .prop_map(|(method, params)| Message::Notification { method, params }),
    ]
}

/// Splits a framed message into its announced length and body.
fn unframe(framed: &[u8], max: usize) -> Result<&[u8], FrameError> {
    let header: [u8; FRAME_HEADER_LEN] = framed[..FRAME_HEADER_LEN].try_into().expect("header");
    let len = decode_header(header, max)?;
    Ok(&framed[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len])
}

proptest! {
    #[test]
    fn messages_round_trip_through_a_frame(message in any_message()) {
        let framed = encode_frame(&message.to_json());
        let body = unframe(&framed, usize::MAX).expect("fits");
        prop_assert_eq!(body.len(), framed.len() - FRAME_HEADER_LEN);
        prop_assert_eq!(Message::from_json(body).expect("parses"), message);
    }

    #[test]
    fn requests_framed_in_place_read_back(id in any::<u64>(), method in "[a-z.]{1,16}", params in any_json()) {
        let framed = encode_request(id, &method, &params);
        let body = unframe(&framed, usize::MAX).expect("fits");
        let expected = Message::Request { id, method, params, reply_on_main: false };
        prop_assert_eq!(Message::from_json(body).expect("parses"), expected);
    }

    /// The header alone decides: empty and oversized frames are refused
    /// before a reader would allocate or read their body.
    #[test]
    fn headers_are_judged_alone(header in any::<[u8; 4]>(), max in 0usize..(1 << 20)) {
        let len = u32::from_be_bytes(header) as usize;
        match decode_header(header, max) {
            Ok(n) => prop_assert!(n == len && n > 0 && n <= max),
            Err(FrameError::Empty) => prop_assert_eq!(len, 0),
            Err(FrameError::TooLarge { len: l, max: m }) => prop_assert!(l == len && m == max && len > max),
        }
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(m) = Message::from_json(&body) {
            // Whatever parses, serializes back to a parsable body.
            prop_assert_eq!(Message::from_json(&m.to_json()).expect("re-parses"), m);
        }
    }

    #[test]
    fn json_shaped_bodies_never_panic(v in any_json()) {
        let body = serde_json::to_vec(&v).expect("json");
        let _ = Message::from_json(&body);
    }
}
