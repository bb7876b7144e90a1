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
