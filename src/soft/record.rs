//! The records soft locks keep on disk, byte-compatible with Python filelock 4.2.
//!
//! - Protocol 1 (`SoftFileLock`): `"<pid>\n<host>\n<start token>\n"`, the third line only when
//!   the writer knows its start token.
//! - Protocol 2 (leases and other owner records): a first line `filelock/2`, then
//!   `key=value` lines (`pid`, `host`, `mode`, and optionally `token`, `duration`, `start`);
//!   unknown keys are ignored so newer writers stay readable.
//! - The strict sentinel, a record every soft reader takes for a holder it can never probe.
//!
//! Parsing is strict in the same places Python's is: a record that does not end in a newline
//! was cut short, a pid is ASCII digits in `1..=2^31-1`, and content over
//! [`MAX_RECORD`] bytes or not UTF-8 is unreadable.

use std::fmt;

/// Records longer than this are unreadable (a huge file cannot exhaust memory).
pub(crate) const MAX_RECORD: usize = 1024;

/// The strict lock's sentinel at the lock path, as Python writes it.
pub(crate) const STRICT_SENTINEL: &[u8] = b"1\nfilelock-strict-v1\0\n0\n";

/// What a released marker says when a peer's exchange moved it aside meanwhile.
pub(crate) const RELEASED: &[u8] = b"filelock/released\n";

const PROTOCOL_2: &str = "filelock/2";
const PID_MAX: u64 = (1 << 31) - 1;

/// A marker's content as readers take it: `None` when it is over [`MAX_RECORD`] bytes or
/// not UTF-8 (both unreadable, as in Python). Callers read at most `MAX_RECORD + 1` bytes, so
/// an oversized file is seen as such without being read whole.
pub(crate) fn decode(data: &[u8]) -> Option<&str> {
    if data.len() > MAX_RECORD {
        return None;
    }
    std::str::from_utf8(data).ok()
}

/// A process start token: an unsigned integer of up to 256 bits, written in decimal.
///
/// On Linux it is `boot_id << 64 | starttime`, so it needs more than 128 bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Token([u64; 4]);

impl Token {
    /// `high << 64 | low` (Linux builds tokens this way from the boot id and start time,
    /// Windows from a zero high half and the creation time).
    #[cfg_attr(
        not(any(target_os = "linux", target_os = "android", windows)),
        allow(dead_code)
    )]
    pub(crate) fn new(high: u128, low: u64) -> Token {
        Token([low, high as u64, (high >> 64) as u64, 0])
    }

    /// Parses ASCII decimal digits (no sign, no spaces). `None` for anything else, or a
    /// value too large to be a token any writer produces.
    pub(crate) fn parse(text: &str) -> Option<Token> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut limbs = [0u64; 4];
        for digit in text.bytes().map(|b| u64::from(b - b'0')) {
            let mut carry = digit as u128;
            for limb in &mut limbs {
                let v = (*limb as u128) * 10 + carry;
                *limb = v as u64;
                carry = v >> 64;
            }
            if carry != 0 {
                return None;
            }
        }
        Some(Token(limbs))
    }

    fn low(self) -> u64 {
        self.0[0]
    }

    /// Whether the bits above the low 64 (Linux: the boot id) are equal.
    #[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
    pub(crate) fn high_bits_eq(self, other: Token) -> bool {
        self.0[1..] == other.0[1..]
    }

    fn high_is_zero(self) -> bool {
        self.0[1..].iter().all(|&l| l == 0)
    }

    /// Python's `_same_start`: equal, or equal start times when either side could not read
    /// the boot id (its high bits are then zero).
    pub(crate) fn same_start(self, other: Token) -> bool {
        self == other
            || ((self.high_is_zero() || other.high_is_zero()) && self.low() == other.low())
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut limbs = self.0;
        let mut digits = Vec::new();
        loop {
            let mut rem = 0u128;
            for limb in limbs.iter_mut().rev() {
                let v = (rem << 64) | *limb as u128;
                *limb = (v / 10) as u64;
                rem = v % 10;
            }
            digits.push(b'0' + rem as u8);
            if limbs.iter().all(|&l| l == 0) {
                break;
            }
        }
        digits.reverse();
        f.write_str(std::str::from_utf8(&digits).expect("ASCII digits"))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A protocol 1 record: who holds a `SoftFileLock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) pid: u32,
    pub(crate) host: String,
    pub(crate) start: Option<Token>,
}

/// Parses a pid as writers format it: ASCII digits in `1..=2^31-1`.
pub(crate) fn parse_pid(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pid: u64 = text.parse().ok()?;
    (1..=PID_MAX).contains(&pid).then_some(pid as u32)
}

/// Python's `str.strip().splitlines()` for the ASCII records we read: the split points are
/// every line boundary Python knows, so a record with `\r` or `\x1c` in a line is read as
/// Python reads it.
fn python_lines(content: &str) -> Vec<&str> {
    let trimmed =
        content.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c));
    if trimmed.is_empty() {
        return Vec::new();
    }
    let is_break = |c: char| {
        matches!(
            c,
            '\n' | '\r'
                | '\x0b'
                | '\x0c'
                | '\x1c'
                | '\x1d'
                | '\x1e'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        )
    };
    let mut lines = Vec::new();
    let mut rest = trimmed;
    while !rest.is_empty() {
        match rest.find(is_break) {
            Some(i) => {
                lines.push(&rest[..i]);
                let tail = &rest[i..];
                let skip = if tail.starts_with("\r\n") {
                    2
                } else {
                    tail.chars().next().map_or(1, char::len_utf8)
                };
                rest = &tail[skip..];
            }
            None => {
                lines.push(rest);
                break;
            }
        }
    }
    lines
}

impl Holder {
    /// Parses protocol 1; `None` for anything unparsable (the caller treats it as malformed).
    pub(crate) fn parse(content: &str) -> Option<Holder> {
        if content.is_empty() || !content.ends_with('\n') {
            return None;
        }
        let lines = python_lines(content);
        if !(2..=3).contains(&lines.len()) {
            return None;
        }
        let pid = parse_pid(lines[0])?;
        let start = match lines.get(2) {
            Some(t) => Some(Token::parse(t)?),
            None => None,
        };
        Some(Holder {
            pid,
            host: lines[1].to_owned(),
            start,
        })
    }

    /// The bytes `SoftFileLock` writes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut s = format!("{}\n{}\n", self.pid, self.host);
        if let Some(t) = self.start {
            s.push_str(&format!("{t}\n"));
        }
        s.into_bytes()
    }
}

/// What a protocol 2 marker says its owner is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerMode {
    /// A [`SoftFileLease`](crate::SoftFileLease): peers may take it once it stops being
    /// refreshed for its duration.
    Lease,
    /// An exclusive marker, reclaimed only once its owner is provably dead.
    Exclusive,
    /// A mode this version does not know; such a marker is never reclaimed.
    Unknown,
}

/// A protocol 2 owner record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    pub(crate) pid: u32,
    pub(crate) host: String,
    pub(crate) mode: OwnerMode,
    pub(crate) token: Option<String>,
    /// Seconds, as Python's float.
    pub(crate) duration: Option<f64>,
    pub(crate) start: Option<Token>,
}

fn is_duration(text: &str) -> bool {
    // [0-9]+(\.[0-9]+)?(e[+-][0-9]+)?
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let n = digits(text);
    if n == 0 {
        return false;
    }
    let mut rest = &text[n..];
    if let Some(frac) = rest.strip_prefix('.') {
        let m = digits(frac);
        if m == 0 {
            return false;
        }
        rest = &frac[m..];
    }
    if let Some(exp) = rest.strip_prefix('e') {
        let Some(exp) = exp.strip_prefix(['+', '-']) else {
            return false;
        };
        let m = digits(exp);
        if m == 0 {
            return false;
        }
        rest = &exp[m..];
    }
    rest.is_empty()
}

impl Record {
    /// Parses protocol 2; `None` when the content is not a well-formed protocol 2 record.
    pub(crate) fn parse(content: &str) -> Option<Record> {
        if content.is_empty() || !content.ends_with('\n') {
            return None;
        }
        let lines = python_lines(content);
        if lines.first() != Some(&PROTOCOL_2) {
            return None;
        }
        let mut fields: Vec<(&str, &str)> = Vec::new();
        for line in &lines[1..] {
            let (key, value) = line.split_once('=')?;
            // Later keys win, as in Python's dict.
            fields.retain(|(k, _)| *k != key);
            fields.push((key, value));
        }
        let get = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let mode = match get("mode")? {
            "lease" => OwnerMode::Lease,
            "exclusive" => OwnerMode::Exclusive,
            _ => OwnerMode::Unknown,
        };
        let host = get("host").filter(|h| !h.is_empty())?;
        let pid = parse_pid(get("pid")?)?;
        let duration = match get("duration") {
            Some(d) if is_duration(d) => Some(d.parse::<f64>().ok()?),
            Some(_) => return None,
            None => None,
        };
        let start = match get("start") {
            Some(s) => Some(Token::parse(s)?),
            None => None,
        };
        let token = get("token").map(str::to_owned);
        if mode == OwnerMode::Lease
            && (token.as_deref().is_none_or(str::is_empty)
                || !duration.is_some_and(|d| d.is_finite() && d > 0.0))
        {
            return None;
        }
        Some(Record {
            pid,
            host: host.to_owned(),
            mode,
            token,
            duration,
            start,
        })
    }

    /// The bytes Python's `encode_marker` writes for this record.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mode = match self.mode {
            OwnerMode::Lease => "lease",
            OwnerMode::Exclusive => "exclusive",
            OwnerMode::Unknown => "unknown",
        };
        let mut s = format!(
            "{PROTOCOL_2}\npid={}\nhost={}\nmode={mode}\n",
            self.pid, self.host
        );
        if let Some(t) = &self.token {
            s.push_str(&format!("token={t}\n"));
        }
        if let Some(d) = self.duration {
            s.push_str(&format!("duration={}\n", py_float_repr(d)));
        }
        if let Some(t) = self.start {
            s.push_str(&format!("start={t}\n"));
        }
        s.into_bytes()
    }
}

/// Formats `x` as Python's `repr(float)` does: the shortest digits that round-trip, in
/// fixed notation for decimal exponents from -4 to 15 (with `.0` for whole numbers), and
/// otherwise in exponent notation with a sign and at least two exponent digits (`1e-05`,
/// `1.5e+20`).
pub(crate) fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    // Rust's `{:e}` gives the shortest round-trip digits too: "d.ddde<exp>".
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').expect("LowerExp has an exponent");
    let exp: i32 = exp.parse().expect("LowerExp exponent is an integer");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let n = digits.len() as i32;
    // The decimal point sits after `decpt` digits.
    let decpt = exp + 1;
    let body = if decpt <= -4 || decpt > 16 {
        let mut m = digits[..1].to_owned();
        if n > 1 {
            m.push('.');
            m.push_str(&digits[1..]);
        }
        let e = decpt - 1;
        format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    } else if decpt <= 0 {
        format!("0.{}{digits}", "0".repeat((-decpt) as usize))
    } else if decpt >= n {
        format!("{digits}{}.0", "0".repeat((decpt - n) as usize))
    } else {
        format!(
            "{}.{}",
            &digits[..decpt as usize],
            &digits[decpt as usize..]
        )
    };
    format!("{sign}{body}")
}

/// The host field of a record, from the raw host name and the PID namespace inode (`None`
/// for the initial namespace, or where namespaces do not exist), escaped as Python escapes
/// it: printable non-space ASCII except `?` kept, every other byte as `?<2 hex>`, a
/// `?pidns-<hex>` suffix for a non-initial namespace, names over 253 characters cut with a
/// digest of the cut part, and `?` for an empty name.
pub(crate) fn host_field(raw: &[u8], namespace: Option<u64>) -> String {
    const LIMIT: usize = 253;
    const DIGEST: usize = 8;
    let mut name = String::new();
    for &b in raw {
        if (0x21..0x7f).contains(&b) && b != b'?' {
            name.push(b as char);
        } else {
            name.push_str(&format!("?{b:02x}"));
        }
    }
    if let Some(ns) = namespace {
        name.push_str(&format!("?pidns-{ns:x}"));
    }
    if name.len() > LIMIT {
        let keep = LIMIT - DIGEST - 1;
        let digest = sha256(&name.as_bytes()[keep..]);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        name = format!("{}-{}", &name[..keep], &hex[..DIGEST]);
    }
    if name.is_empty() {
        name.push('?');
    }
    name
}

/// SHA-256, for the digest of an over-long host name (the only use; not worth a crate).
fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 64];
        for (i, word) in chunk.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes(word.try_into().expect("4 bytes"));
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7]
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [
                t1.wrapping_add(t2),
                v[0],
                v[1],
                v[2],
                v[3].wrapping_add(t1),
                v[4],
                v[5],
                v[6],
            ];
        }
        for (a, b) in h.iter_mut().zip(v) {
            *a = a.wrapping_add(b);
        }
    }
    let mut out = [0u8; 32];
    for (i, word) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        for (x, want) in [
            (30.0, "30.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1.5e20, "1.5e+20"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (2.5, "2.5"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1e300, "1e+300"),
            (5e-324, "5e-324"),
            (0.25, "0.25"),
            (100.0, "100.0"),
        ] {
            assert_eq!(py_float_repr(x), want, "{x:?}");
            assert!(is_duration(want), "{want}");
        }
    }

    #[test]
    fn tokens_round_trip_past_128_bits() {
        let text = "1038233318192901186117318750345645762244382065984106718232";
        let t = Token::parse(text).unwrap();
        assert_eq!(t.to_string(), text);
        assert_eq!(Token::new(0, 7).to_string(), "7");
        assert!(Token::parse("+1").is_none() && Token::parse("1_0").is_none());
        assert!(Token::parse(&"9".repeat(100)).is_none());
        // A missing boot id (high bits zero) compares start times alone.
        assert!(Token::new(5, 9).same_start(Token::new(0, 9)));
        assert!(!Token::new(5, 9).same_start(Token::new(6, 9)));
    }

    #[test]
    fn protocol_1_parse_rules() {
        let h = Holder::parse("25010\nvm\n1038\n").unwrap();
        assert_eq!(
            (h.pid, h.host.as_str(), h.start),
            (25010, "vm", Token::parse("1038"))
        );
        assert_eq!(h.encode(), b"25010\nvm\n1038\n");
        for bad in [
            "",
            "25010\nvm",
            "0\nvm\n",
            "2147483648\nvm\n",
            "+1\nvm\n",
            "1\n",
            "1\nh\n2\n3\n",
            "1\nh\n-2\n",
            "١\nh\n",
        ] {
            assert!(Holder::parse(bad).is_none(), "{bad:?}");
        }
        assert!(Holder::parse("2147483647\nh\n").is_some());
        // The strict sentinel reads as pid 1 on a host no one can probe.
        let s = Holder::parse(std::str::from_utf8(STRICT_SENTINEL).unwrap()).unwrap();
        assert_eq!((s.pid, s.host.as_str()), (1, "filelock-strict-v1\0"));
    }

    #[test]
    fn protocol_2_round_trip_and_rules() {
        let r = Record {
            pid: 42,
            host: "vm".into(),
            mode: OwnerMode::Lease,
            token: Some("ab".repeat(16)),
            duration: Some(1e-5),
            start: Some(Token::new(1, 2)),
        };
        let bytes = r.encode();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            format!(
                "filelock/2\npid=42\nhost=vm\nmode=lease\ntoken={}\nduration=1e-05\nstart=18446744073709551618\n",
                "ab".repeat(16)
            )
        );
        assert_eq!(Record::parse(std::str::from_utf8(&bytes).unwrap()), Some(r));
        let odd = Record::parse("filelock/2\npid=3\nhost=h\nmode=shared\nfuture=1\n").unwrap();
        assert_eq!(odd.mode, OwnerMode::Unknown);
        for bad in [
            "filelock/2\npid=3\nhost=h\n",
            "filelock/2\npid=3\nmode=exclusive\n",
            "filelock/2\npid=3\nhost=h\nmode=lease\nduration=3.0\n",
            "filelock/2\npid=3\nhost=h\nmode=lease\ntoken=t\nduration=1e5\n",
            "filelock/2\npid=3\nhost=h\nmode=exclusive\nnoequals\n",
            "filelock/2\npid=3\nhost=h\nmode=exclusive",
            "3\nh\n",
        ] {
            assert!(Record::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn host_escaping_matches_python() {
        assert_eq!(host_field(b"build-host", None), "build-host");
        assert_eq!(host_field(b"a b?\n", None), "a?20b?3f?0a");
        assert_eq!(host_field(b"", None), "?");
        assert_eq!(host_field(b"a", Some(0xf000_0123)), "a?pidns-f0000123");
        // Python: 'x'*300 -> 'x'*244 + '-' + sha256('x'*56).hexdigest()[:8]
        let long = host_field(&[b'x'; 300], None);
        assert_eq!(long.len(), 253);
        assert!(long.starts_with(&"x".repeat(244)));
    }

    #[test]
    fn sha256_known_answer() {
        let hex: String = sha256(b"abc").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

/// The invariants of the marker parsers on any input, for the property tests and the fuzz
/// targets: each function parses its input and panics if a parse breaks one.
#[cfg(any(test, feature = "fault-injection"))]
pub(crate) mod check {
    use super::*;

    /// Marker content as the soft locks read it (the cap, then UTF-8), and as the strict
    /// lock reads the lock path (lossily).
    pub(crate) fn marker(data: &[u8]) {
        match decode(data) {
            Some(content) => {
                assert!(data.len() <= MAX_RECORD);
                text(content);
            }
            None => assert!(data.len() > MAX_RECORD || std::str::from_utf8(data).is_err()),
        }
        if data.len() <= MAX_RECORD {
            text(&String::from_utf8_lossy(data));
        }
    }

    /// What any parse of `content` may hold: values that came out of it, with the
    /// documented invariants.
    pub(crate) fn text(content: &str) {
        if let Some(r) = Record::parse(content) {
            assert!((1..=PID_MAX).contains(&u64::from(r.pid)));
            assert!(!r.host.is_empty() && content.contains(&r.host));
            assert!(r
                .token
                .as_ref()
                .is_none_or(|t| content.contains(t.as_str())));
            if r.mode == OwnerMode::Lease {
                assert!(r.token.as_deref().is_some_and(|t| !t.is_empty()));
                assert!(r.duration.is_some_and(|d| d.is_finite() && d > 0.0));
            }
        }
        if let Some(h) = Holder::parse(content) {
            assert!((1..=PID_MAX).contains(&u64::from(h.pid)));
            assert!(content.contains(&h.host));
            // Whatever it read, what it would write reads back the same.
            let again = String::from_utf8(h.encode()).expect("records are written as UTF-8");
            assert_eq!(Holder::parse(&again), Some(h));
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Any start token a writer can produce: up to 256 bits.
    fn token() -> impl Strategy<Value = Token> {
        any::<[u64; 4]>().prop_map(Token)
    }

    /// A host field as [`host_field`] builds it from any raw name and namespace.
    fn host() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<Option<u64>>(),
        )
            .prop_map(|(raw, ns)| host_field(&raw, ns))
    }

    fn pid() -> impl Strategy<Value = u32> {
        1..=PID_MAX as u32
    }

    /// Every positive finite `f64`, subnormals included.
    fn positive_duration() -> impl Strategy<Value = f64> {
        prop_oneof![
            (1u64..0x7ff0_0000_0000_0000).prop_map(f64::from_bits),
            any::<u64>()
                .prop_filter("a lease is never zero", |&n| n != 0)
                .prop_map(|n| std::time::Duration::from_nanos(n).as_secs_f64()),
        ]
    }

    fn hex32() -> impl Strategy<Value = String> {
        "[0-9a-f]{32}"
    }

    fn record() -> impl Strategy<Value = Record> {
        let lease = (
            pid(),
            host(),
            hex32(),
            positive_duration(),
            any::<bool>(),
            token(),
        )
            .prop_map(|(pid, host, token, duration, has_start, start)| Record {
                pid,
                host,
                mode: OwnerMode::Lease,
                token: Some(token),
                duration: Some(duration),
                start: has_start.then_some(start),
            });
        let other = (
            pid(),
            host(),
            prop_oneof![Just(OwnerMode::Exclusive), Just(OwnerMode::Unknown)],
            proptest::option::of(hex32()),
            proptest::option::of(prop_oneof![Just(0.0), positive_duration()]),
            proptest::option::of(token()),
        )
            .prop_map(|(pid, host, mode, token, duration, start)| Record {
                pid,
                host,
                mode,
                token,
                duration,
                start,
            });
        prop_oneof![lease, other]
    }

    /// Text made of record-like lines, so the parsers get past their first checks.
    fn record_like() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            proptest::sample::select(vec!["pid", "host", "mode", "token", "duration", "start"])
                .prop_map(str::to_owned),
            "[a-z]{0,3}",
        ];
        let value = prop_oneof![
            "[0-9]{0,12}",
            "[0-9]{1,4}(\\.[0-9]{0,3})?(e[+-]?[0-9]{0,4})?",
            Just("lease".to_owned()),
            Just("exclusive".to_owned()),
            "[ -~]{0,8}",
            "\\PC{0,4}",
        ];
        let line = prop_oneof![
            (key, value).prop_map(|(k, v)| format!("{k}={v}")),
            "[0-9]{0,11}",
            "\\PC{0,6}",
        ];
        let separator = prop_oneof![
            4 => Just("\n"),
            1 => Just("\r\n"),
            1 => Just("\r"),
            1 => Just("\u{2028}"),
            1 => Just("\x1c"),
            1 => Just(" \n"),
        ];
        (
            prop_oneof![Just("filelock/2\n"), Just("")],
            proptest::collection::vec((line, separator), 0..8),
        )
            .prop_map(|(first, lines)| {
                let mut text = first.to_owned();
                for (line, separator) in lines {
                    text.push_str(&line);
                    text.push_str(separator);
                }
                text
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2 * MAX_RECORD)) {
            check::marker(&data);
        }

        #[test]
        fn record_like_text_never_panics(text in record_like()) {
            check::text(&text);
        }

        #[test]
        fn content_over_the_cap_is_unreadable(r in record(), pad in MAX_RECORD..3 * MAX_RECORD) {
            let mut data = r.encode();
            prop_assert!(data.len() <= MAX_RECORD);
            prop_assert!(decode(&data).is_some());
            // Trailing newlines alone keep the record well-formed, yet past the cap it is
            // refused without being parsed.
            data.resize(pad + 1, b'\n');
            prop_assert_eq!(decode(&data), None);
        }

        #[test]
        fn protocol_2_records_we_write_parse_back(r in record()) {
            let data = r.encode();
            let text = decode(&data).expect("a record we write is readable");
            prop_assert_eq!(Record::parse(text), Some(r));
            // A protocol 1 reader never mistakes it for a SoftFileLock record.
            prop_assert_eq!(Holder::parse(text), None);
        }

        #[test]
        fn protocol_1_records_we_write_parse_back(
            pid in pid(),
            host in host(),
            start in proptest::option::of(token()),
        ) {
            let h = Holder { pid, host, start };
            let data = h.encode();
            let text = decode(&data).expect("a record we write is readable");
            prop_assert_eq!(Holder::parse(text), Some(h));
            prop_assert_eq!(Record::parse(text), None);
        }

        #[test]
        fn tokens_print_and_parse_back(t in token(), high in any::<u128>(), low in any::<u64>()) {
            prop_assert_eq!(Token::parse(&t.to_string()), Some(t));
            let linux = Token::new(high, low);
            prop_assert_eq!(Token::parse(&linux.to_string()), Some(linux));
            prop_assert!(linux.same_start(Token::new(0, low)));
        }

        #[test]
        fn token_parse_accepts_digits_only(text in "\\PC{0,90}") {
            if let Some(t) = Token::parse(&text) {
                prop_assert!(text.bytes().all(|b| b.is_ascii_digit()));
                let canonical = text.trim_start_matches('0');
                prop_assert_eq!(t.to_string(), if canonical.is_empty() { "0" } else { canonical });
            }
        }

        #[test]
        fn host_fields_are_bounded_and_printable(raw in proptest::collection::vec(any::<u8>(), 0..600), ns in any::<Option<u64>>()) {
            let host = host_field(&raw, ns);
            prop_assert!(!host.is_empty() && host.len() <= 253);
            prop_assert!(host.bytes().all(|b| (0x21..0x7f).contains(&b)));
        }

        #[test]
        fn pids_parse_only_in_range(text in "[0-9]{0,12}|\\PC{0,12}") {
            if let Some(pid) = parse_pid(&text) {
                prop_assert!((1..=PID_MAX).contains(&u64::from(pid)));
                prop_assert_eq!(text.parse::<u64>().ok(), Some(u64::from(pid)));
            }
        }
    }
}
