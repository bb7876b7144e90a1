//! Turning token pieces into text: bytes that may end inside a UTF-8
//! character are held until it is complete, and text that may be the
//! start of a stop string is held until it is known not to be.

/// Holds the bytes of an unfinished UTF-8 character between pieces.
#[derive(Debug, Default)]
pub(crate) struct Utf8Buffer {
    pending: Vec<u8>,
}

impl Utf8Buffer {
    /// The text completed by `bytes`; invalid sequences become U+FFFD.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // Incomplete at the end: wait for the next piece.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// What is left at the end (an unfinished character becomes U+FFFD).
    pub(crate) fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

/// The answer so far, cut at the first stop string.
#[derive(Debug)]
pub(crate) struct StopScanner {
    stops: Vec<String>,
    text: String,
    /// Bytes of `text` already handed out.
    emitted: usize,
    stopped: bool,
}

impl StopScanner {
    pub(crate) fn new(stops: &[String]) -> StopScanner {
        StopScanner {
            stops: stops.to_vec(),
            text: String::new(),
            emitted: 0,
            stopped: false,
        }
    }

    /// Adds text; answers what may be shown now. After a stop string, the
    /// text ends before it and nothing more is shown.
    pub(crate) fn push(&mut self, piece: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.text.push_str(piece);
        // A stop string may start in text already shown only if it was
        // held back, so searching from a little before `emitted` suffices.
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let mut from = self.emitted.saturating_sub(longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min()
        {
            self.text.truncate(at);
            self.stopped = true;
        }
        let safe = if self.stopped {
            self.text.len()
        } else {
            self.text.len() - self.held_back()
        };
        let out = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        out
    }

    /// Bytes at the end of the text that could begin a stop string.
    fn held_back(&self) -> usize {
        let mut held = 0;
        for stop in &self.stops {
            for len in (1..stop.len()).rev() {
                if stop.is_char_boundary(len) && self.text.ends_with(&stop[..len]) {
                    held = held.max(len);
                    break;
                }
            }
        }
        held
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stopped
    }

    /// The rest, at the end of generation (nothing was a stop string).
    pub(crate) fn flush(&mut self) -> String {
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_pieces_is_held_until_complete() {
        let mut b = Utf8Buffer::default();
        let e = "é".as_bytes();
        assert_eq!(b.push(b"caf"), "caf");
        assert_eq!(b.push(&e[..1]), "");
        assert_eq!(b.push(&e[1..]), "é");
        assert_eq!(b.push(&[0xff, b'x']), "\u{fffd}x");
        assert_eq!(b.push(&"€".as_bytes()[..2]), "");
        assert_eq!(b.finish(), "\u{fffd}");
    }

    #[test]
    fn text_stops_before_a_stop_string_even_across_pieces() {
        let mut s = StopScanner::new(&["END".to_string()]);
        let mut shown = String::new();
        for piece in ["Hello E", "N", "D and more"] {
            shown.push_str(&s.push(piece));
        }
        assert!(s.stopped());
        assert_eq!(s.text(), "Hello ");
        assert_eq!(shown, "Hello ");
        // A false start is shown once it is known not to be a stop.
        let mut s = StopScanner::new(&["END".to_string()]);
        assert_eq!(s.push("an E"), "an ");
        assert_eq!(s.push("Nigma"), "ENigma");
        assert_eq!(s.flush(), "");
        assert!(!s.stopped());
    }
}
