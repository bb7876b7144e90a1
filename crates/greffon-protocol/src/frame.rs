//! Byte framing: every message is a 4-byte big-endian length followed by
//! that many bytes of UTF-8 JSON.
//!
//! A length prefix (rather than newline-delimited JSON) lets each side
//! refuse an oversized frame before reading it, which is how a worker that
//! writes garbage to its channel is detected without the host buffering it.

use std::fmt;

/// Size of the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// Why a frame header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The announced body is larger than the reader accepts.
    TooLarge { len: usize, max: usize },
    /// A zero-length body cannot hold a JSON object.
    Empty,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max} bytes")
            }
            FrameError::Empty => f.write_str("empty frame"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Prepends the length prefix to a JSON body.
pub fn encode_frame(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Frames a request without copying its parameters: length prefix, then
/// `{"id":..,"method":..,"params":..}`.
pub fn encode_request<P: serde::Serialize + ?Sized>(id: u64, method: &str, params: &P) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Request<'a, P: ?Sized> {
        id: u64,
        method: &'a str,
        params: &'a P,
    }
    let mut out = vec![0u8; FRAME_HEADER_LEN];
    // Writing JSON values into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &Request { id, method, params });
    let len = u32::try_from(out.len() - FRAME_HEADER_LEN).unwrap_or(u32::MAX);
    out[..FRAME_HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    out
}

/// Reads a length prefix and checks it against `max`.
pub fn decode_header(header: [u8; FRAME_HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let framed = encode_frame(b"{\"a\":1}");
        let header: [u8; 4] = framed[..4].try_into().expect("four bytes");
        assert_eq!(decode_header(header, 100), Ok(7));
        assert_eq!(&framed[4..], b"{\"a\":1}");
    }

    #[test]
    fn encoded_requests_decode_as_requests() {
        let params = serde_json::json!({"args": {"n": 1}});
        let framed = encode_request(9, "run", &params);
        let header: [u8; 4] = framed[..4].try_into().expect("four bytes");
        assert_eq!(decode_header(header, 1 << 20), Ok(framed.len() - 4));
        let m = crate::Message::from_json(&framed[4..]).expect("decodes");
        assert_eq!(
            m,
            crate::Message::Request {
                id: 9,
                method: "run".into(),
                params,
                reply_on_main: false,
            }
        );
    }

    #[test]
    fn oversized_and_empty_frames_are_refused() {
        assert_eq!(
            decode_header(1000u32.to_be_bytes(), 999),
            Err(FrameError::TooLarge {
                len: 1000,
                max: 999
            })
        );
        assert_eq!(decode_header([0; 4], 10), Err(FrameError::Empty));
        // "garb" read as a length is ~1.7 GB: refused before any body is read.
        assert!(decode_header(*b"garb", 16 << 20).is_err());
    }
}
