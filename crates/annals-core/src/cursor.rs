//! Opaque cursors and page tokens.
//!
//! A cursor encodes a position and a reading direction, plus a check value so that a
//! string that was never issued by Annals (edited, truncated, from another program) is
//! refused with [`Error::InvalidInput`] instead of silently reading from the wrong place.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::model::{Direction, Position, Timestamp};

/// Where a `read_all` continues: past `position` in `direction`.
///
/// ```
/// use annals_core::{Cursor, Direction};
/// let c = Cursor::forward_after(42);
/// let text = c.to_string();
/// let back: Cursor = text.parse().unwrap();
/// assert_eq!(back, c);
/// assert_eq!(back.position(), 42);
/// assert!("garbage".parse::<Cursor>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    position: Position,
    direction: Direction,
}

impl Cursor {
    /// A forward cursor: the next read returns events with positions above `position`.
    ///
    /// ```
    /// assert_eq!(annals_core::Cursor::forward_after(0).position(), 0);
    /// ```
    pub fn forward_after(position: Position) -> Self {
        Cursor {
            position,
            direction: Direction::Forward,
        }
    }

    /// A backward cursor: the next read returns events with positions below `position`.
    ///
    /// ```
    /// let c = annals_core::Cursor::backward_before(10);
    /// assert_eq!(c.direction(), annals_core::Direction::Backward);
    /// ```
    pub fn backward_before(position: Position) -> Self {
        Cursor {
            position,
            direction: Direction::Backward,
        }
    }

    /// The exclusive bound this cursor encodes.
    ///
    /// ```
    /// assert_eq!(annals_core::Cursor::backward_before(3).position(), 3);
    /// ```
    pub fn position(&self) -> Position {
        self.position
    }

    /// The direction this cursor continues in.
    ///
    /// ```
    /// assert_eq!(annals_core::Cursor::forward_after(3).direction(), annals_core::Direction::Forward);
    /// ```
    pub fn direction(&self) -> Direction {
        self.direction
    }
}

const CURSOR_KEY: u64 = 0x616e_6e61_6c73_6375; // "annalscu"
const TOKEN_KEY: u64 = 0x616e_6e61_6c73_746b; // "annalstk"

/// FNV-1a over the words, seeded with a per-kind key: cheap, and enough to catch any
/// string Annals did not produce.
fn check(key: u64, words: &[u64]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ key;
    for w in words {
        for b in w.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    (h ^ (h >> 32)) as u32
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = match self.direction {
            Direction::Forward => 0,
            Direction::Backward => 1,
        };
        let tag = if d == 0 { 'f' } else { 'b' };
        write!(
            f,
            "{tag}{:x}.{:08x}",
            self.position,
            check(CURSOR_KEY, &[d, self.position])
        )
    }
}

impl FromStr for Cursor {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid("cursor", format!("{s:?} is not a cursor issued by Annals"));
        let (dir, rest) = match s.as_bytes().first() {
            Some(b'f') => (Direction::Forward, &s[1..]),
            Some(b'b') => (Direction::Backward, &s[1..]),
            _ => return Err(bad()),
        };
        let (pos, sum) = rest.split_once('.').ok_or_else(bad)?;
        if pos.is_empty() || pos.len() > 16 || sum.len() != 8 {
            return Err(bad());
        }
        let position = u64::from_str_radix(pos, 16).map_err(|_| bad())?;
        let sum = u32::from_str_radix(sum, 16).map_err(|_| bad())?;
        let d = u64::from(dir == Direction::Backward);
        if check(CURSOR_KEY, &[d, position]) != sum {
            return Err(bad());
        }
        Ok(Cursor {
            position,
            direction: dir,
        })
    }
}

impl serde::Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A page token of `list_streams`: the sort key of the last stream of a page.
///
/// ```
/// use annals_core::{StreamPageToken, Timestamp};
/// let t = StreamPageToken::new(Timestamp::from_millis(5), 9);
/// let parsed: StreamPageToken = t.to_string().parse().unwrap();
/// assert_eq!(parsed, t);
/// assert!("s1.2.3".parse::<StreamPageToken>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamPageToken {
    /// First-event timestamp of the last stream returned.
    pub first_timestamp: Timestamp,
    /// First-event position of the last stream returned.
    pub first_position: Position,
}

impl StreamPageToken {
    /// A token that continues strictly after the stream with this sort key.
    ///
    /// ```
    /// let t = annals_core::StreamPageToken::new(annals_core::Timestamp::from_millis(1), 2);
    /// assert_eq!(t.first_position, 2);
    /// ```
    pub fn new(first_timestamp: Timestamp, first_position: Position) -> Self {
        StreamPageToken {
            first_timestamp,
            first_position,
        }
    }
}

impl fmt::Display for StreamPageToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ts = self.first_timestamp.as_millis() as u64;
        write!(
            f,
            "s{:x}.{:x}.{:08x}",
            ts,
            self.first_position,
            check(TOKEN_KEY, &[ts, self.first_position])
        )
    }
}

impl FromStr for StreamPageToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "page_token",
                format!("{s:?} is not a page token issued by Annals"),
            )
        };
        let rest = s.strip_prefix('s').ok_or_else(bad)?;
        let mut parts = rest.split('.');
        let (Some(ts), Some(pos), Some(sum), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let ts = u64::from_str_radix(ts, 16).map_err(|_| bad())?;
        let pos = u64::from_str_radix(pos, 16).map_err(|_| bad())?;
        let sum = u32::from_str_radix(sum, 16).map_err(|_| bad())?;
        if sum != check(TOKEN_KEY, &[ts, pos]) {
            return Err(bad());
        }
        Ok(StreamPageToken {
            first_timestamp: Timestamp::from_millis(ts as i64),
            first_position: pos,
        })
    }
}
