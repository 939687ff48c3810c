//! Allocation-free text building into caller-provided byte buffers.
//!
//! Used for every message and report the library prints, because `format!`
//! would re-enter the host's `malloc` through our own hooks. Output that does
//! not fit is cut off and remembered as `truncated`; nothing here can fail or
//! panic.

pub struct BufWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    truncated: bool,
}

impl<'a> BufWriter<'a> {
    pub fn new(buf: &'a mut [u8]) -> BufWriter<'a> {
        BufWriter {
            buf,
            len: 0,
            truncated: false,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// What was written, NUL-terminated, as a C string (a path for a system
    /// call): `None` if it was cut off or holds no NUL.
    pub fn into_c_str(self) -> Option<&'a core::ffi::CStr> {
        if self.truncated {
            return None;
        }
        let written: &'a [u8] = &self.buf[..self.len];
        core::ffi::CStr::from_bytes_until_nul(written).ok()
    }

    pub fn bytes(&mut self, s: &[u8]) -> &mut Self {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
        if n < s.len() {
            self.truncated = true;
        }
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    pub fn u64(&mut self, mut v: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.bytes(&digits[i..])
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        if v < 0 {
            self.str("-").u64(v.unsigned_abs())
        } else {
            self.u64(v as u64)
        }
    }

    /// A byte count for people: `512 B`, `12.0 KiB`, `3.4 MiB`, `1.2 GiB`.
    pub fn human_bytes(&mut self, v: u64) -> &mut Self {
        const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
        if v < 1024 {
            return self.u64(v).str(" B");
        }
        let mut unit = 0;
        let mut scaled = v as u128 * 10 / 1024;
        while scaled >= 10240 && unit + 1 < UNITS.len() {
            scaled /= 1024;
            unit += 1;
        }
        self.u64((scaled / 10) as u64)
            .str(".")
            .u64((scaled % 10) as u64)
            .str(" ")
            .str(UNITS[unit])
    }

    /// `s` with anything but printable ASCII shown as `\xNN`, so a value
    /// from the environment can never break a one-line message in two.
    pub fn printable(&mut self, s: &[u8]) -> &mut Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for &b in s {
            match b {
                0x20..=0x7e => self.bytes(&[b]),
                _ => self
                    .str("\\x")
                    .bytes(&[HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]),
            };
        }
        self
    }

    /// `s` as the body of a JSON string (quotes not included).
    pub fn json_escaped(&mut self, s: &[u8]) -> &mut Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for &b in s {
            match b {
                b'"' => self.str("\\\""),
                b'\\' => self.str("\\\\"),
                b'\n' => self.str("\\n"),
                0..=0x1f | 0x7f..=0xff => self
                    .str("\\u00")
                    .bytes(&[HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]),
                _ => self.bytes(&[b]),
            };
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_text() {
        let mut buf = [0u8; 64];
        let mut w = BufWriter::new(&mut buf);
        w.str("n=")
            .u64(0)
            .str(",")
            .u64(18446744073709551615)
            .str(",")
            .i64(-42);
        assert_eq!(w.as_bytes(), b"n=0,18446744073709551615,-42");
        assert!(!w.truncated());
    }

    #[test]
    fn human_bytes() {
        let cases: [(u64, &str); 5] = [
            (512, "512 B"),
            (4096, "4.0 KiB"),
            (12 * 1024 + 512, "12.5 KiB"),
            (3 << 20, "3.0 MiB"),
            (5 << 30, "5.0 GiB"),
        ];
        for (v, want) in cases {
            let mut buf = [0u8; 32];
            let mut w = BufWriter::new(&mut buf);
            w.human_bytes(v);
            assert_eq!(std::str::from_utf8(w.as_bytes()).unwrap(), want);
        }
    }

    #[test]
    fn overflow_truncates_without_panicking() {
        let mut buf = [0u8; 4];
        let mut w = BufWriter::new(&mut buf);
        w.str("abcdef").u64(123);
        assert_eq!(w.as_bytes(), b"abcd");
        assert!(w.truncated());
    }

    #[test]
    fn printable_escapes_control_bytes() {
        let mut buf = [0u8; 64];
        let mut w = BufWriter::new(&mut buf);
        w.printable(b"bo\ngus\xff ok");
        assert_eq!(w.as_bytes(), b"bo\\x0agus\\xff ok");
    }

    #[test]
    fn json_escaping() {
        let mut buf = [0u8; 64];
        let mut w = BufWriter::new(&mut buf);
        w.json_escaped(b"a\"b\\c\n\x01\xff");
        assert_eq!(w.as_bytes(), b"a\\\"b\\\\c\\n\\u0001\\u00ff");
    }
}
