//! Reading the worker's frames: a length header, then a JSON body, refused
//! before allocation when the length passes the limit.

use greffon_protocol::{FRAME_HEADER_LEN, Message, decode_header};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

/// A dead peer shows as end of file or as a reset, depending on timing.
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
    )
}

pub(crate) async fn read_message<R: AsyncRead + Unpin>(
    rd: &mut R,
    max: usize,
) -> Result<Option<Message>, String> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    match rd.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if is_closed(&e) => return Ok(None),
        Err(e) => return Err(format!("channel read failed: {e}")),
    }
    let len = decode_header(header, max).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; len];
    match rd.read_exact(&mut body).await {
        Ok(_) => {}
        Err(e) if is_closed(&e) => return Ok(None),
        Err(e) => return Err(format!("channel read failed: {e}")),
    }
    Message::from_json(&body).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use greffon_protocol::encode_frame;
    use proptest::prelude::*;

    /// Reads every message of `bytes` until the end or an error.
    fn read_all(bytes: &[u8], max: usize) -> (Vec<Message>, Option<String>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut rd = bytes;
            let mut read = Vec::new();
            loop {
                match read_message(&mut rd, max).await {
                    Ok(Some(m)) => read.push(m),
                    Ok(None) => return (read, None),
                    Err(e) => return (read, Some(e)),
                }
            }
        })
    }

    proptest! {
        /// Any byte stream a worker could write: no panic, and reading
        /// stops at the first bad frame.
        #[test]
        fn arbitrary_streams_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_all(&bytes, 1 << 10);
        }

        /// A frame announcing more than the limit is refused from its
        /// header: the body is never awaited (here it is not even sent).
        #[test]
        fn oversize_frames_are_refused_before_their_body(len in 1025u32.., good in 0usize..3) {
            let mut bytes = Vec::new();
            for i in 0..good {
                bytes.extend(encode_frame(format!("{{\"method\":\"log\",\"params\":{i}}}").as_bytes()));
            }
            bytes.extend(len.to_be_bytes());
            let (read, error) = read_all(&bytes, 1 << 10);
            prop_assert_eq!(read.len(), good);
            let error = error.expect("refused");
            prop_assert!(error.contains("exceeds the limit"), "{}", error);
        }
    }
}
