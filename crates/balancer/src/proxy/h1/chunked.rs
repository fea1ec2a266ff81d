//! Where a chunked body ends (RFC 9112 §7.1). The fast path passes chunked answers through
//! to the client as they are; it only has to know where one ends, to reuse the backend's
//! connection for the next request and to never send the client bytes of another answer.

/// Longest chunk-size line (size and extensions) accepted.
const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    Size,
    /// Whitespace after the size, before `;` or the CR.
    SizeSpace,
    /// `;extensions` up to the CR.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final blank line.
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

#[derive(Debug)]
pub(super) struct ChunkedEnd {
    state: State,
    size: u64,
    digits: usize,
    line: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Malformed;

impl ChunkedEnd {
    pub fn new() -> ChunkedEnd {
        ChunkedEnd {
            state: State::Size,
            size: 0,
            digits: 0,
            line: 0,
        }
    }

    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Read on through `bytes`; returns how many of them belong to the body (all of them
    /// unless it ended within them).
    pub fn scan(&mut self, bytes: &[u8]) -> Result<usize, Malformed> {
        let mut at = 0;
        while at < bytes.len() && self.state != State::Done {
            if self.state == State::Data {
                // Chunk data is skipped whole, not looked at byte by byte.
                let take = self.size.min((bytes.len() - at) as u64);
                self.size -= take;
                at += take as usize;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            self.step(bytes[at])?;
            at += 1;
        }
        Ok(at)
    }

    fn step(&mut self, byte: u8) -> Result<(), Malformed> {
        self.line += 1;
        if self.line > MAX_LINE {
            return Err(Malformed);
        }
        self.state = match (self.state, byte) {
            (State::Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                let digit = (byte as char).to_digit(16).ok_or(Malformed)?;
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(u64::from(digit)))
                    .ok_or(Malformed)?;
                self.digits += 1;
                State::Size
            }
            (State::Size, b'\r') if self.digits > 0 => State::SizeLf,
            (State::Size | State::SizeSpace, b' ' | b'\t') if self.digits > 0 => State::SizeSpace,
            (State::Size | State::SizeSpace, b';') if self.digits > 0 => State::Extension,
            (State::SizeSpace, b'\r') => State::SizeLf,
            (State::Extension, b'\r') => State::SizeLf,
            // Visible characters, spaces and tabs (tokens, quoted strings); no controls, so
            // the clients this is passed to cannot read the line another way.
            (State::Extension, b'\t' | b' '..=b'~' | 0x80..=0xff) => State::Extension,
            (State::SizeLf, b'\n') if self.size == 0 => self.line_done(State::TrailerStart),
            (State::SizeLf, b'\n') => self.line_done(State::Data),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => self.line_done(State::Size),
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerStart | State::Trailer, b'\n') => return Err(Malformed),
            (State::Trailer, b'\r') => State::TrailerLf,
            (State::TrailerStart | State::Trailer, _) => State::Trailer,
            (State::TrailerLf, b'\n') => self.line_done(State::TrailerStart),
            (State::EndLf, b'\n') => State::Done,
            _ => return Err(Malformed),
        };
        Ok(())
    }

    fn line_done(&mut self, next: State) -> State {
        self.line = 0;
        self.digits = 0;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] =
        b"5 \r\nhello\r\n1A ; ext=\"q v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n";

    #[test]
    fn finds_the_end_whole_or_a_byte_at_a_time() {
        let mut whole = ChunkedEnd::new();
        let mut input = BODY.to_vec();
        input.extend_from_slice(b"HTTP/1.1 200 OK");
        assert_eq!(whole.scan(&input), Ok(BODY.len()));
        assert!(whole.done());
        let mut bytewise = ChunkedEnd::new();
        for (i, byte) in BODY.iter().enumerate() {
            assert!(!bytewise.done(), "done early at {i}");
            assert_eq!(bytewise.scan(std::slice::from_ref(byte)), Ok(1));
        }
        assert!(bytewise.done());
        let mut empty = ChunkedEnd::new();
        assert_eq!(empty.scan(b"0\r\n\r\n"), Ok(5));
        assert!(empty.done());
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"5\nhello\r\n",
            b"ffffffffffffffffff\r\n",
            b"0\r\n\n",
            b"5 5\r\nhello\r\n",
            b"5;a\x01b\r\nhello\r\n",
        ] {
            assert_eq!(ChunkedEnd::new().scan(bad), Err(Malformed), "{bad:?}");
        }
        let long = [b'0']
            .iter()
            .chain([b';'; MAX_LINE + 1].iter())
            .copied()
            .collect::<Vec<_>>();
        assert_eq!(ChunkedEnd::new().scan(&long), Err(Malformed));
    }
}
