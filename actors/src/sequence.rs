//! Publication sequences: how a consumer recognises a record it already applied without keeping
//! a row per event.
//!
//! The outbox relay stamps every record it publishes with a *stream* and a *sequence number*:
//! the stream is the partition it chose for the record's key ([`partition_for`]), and within
//! one (topic, stream) the numbers are dense: 1, 2, 3, ... A row keeps its stamp until the
//! broker acknowledged it, so every copy of one event carries the same stamp: a record
//! published again after a crash between the acknowledgement and the row's deletion, or after a
//! delivery that timed out although the broker had written it.
//!
//! A consumer group keeps, per (topic, stream), the highest number it applied and the numbers
//! below it that it has not seen yet ([`Seen`]). Because the numbers are dense, a number that
//! is skipped (a record whose delivery failed while later ones succeeded, then retried) is
//! known to be missing, and is applied when it arrives late; any other number at or below the
//! highest is a copy. The state is a few integers per stream instead of one row per event.
//!
//! The stamp travels in two record headers, [`STREAM_HEADER`] and [`SEQ_HEADER`], decimal
//! ASCII. A record without them was not published by a relay and is refused by consumers (sent
//! to the dead-letter topic).

use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Header naming the stream of a record (the partition the relay chose for its key).
pub const STREAM_HEADER: &str = "recsys-stream";
/// Header carrying the record's sequence number within its (topic, stream), from 1.
pub const SEQ_HEADER: &str = "recsys-seq";

/// At most this many gap ranges are kept per stream. Gaps close within seconds in practice (a
/// retried delivery); if a broken producer kept opening new ones, the oldest are forgotten and
/// a copy arriving for them would count as a duplicate.
pub const MAX_GAPS: usize = 10_000;

/// The headers stamping a record with `stream` and `seq`.
pub fn headers(stream: i32, seq: i64) -> OwnedHeaders {
    let (stream, seq) = (stream.to_string(), seq.to_string());
    OwnedHeaders::new_with_capacity(2)
        .insert(Header {
            key: STREAM_HEADER,
            value: Some(&stream),
        })
        .insert(Header {
            key: SEQ_HEADER,
            value: Some(&seq),
        })
}

/// Reads the stamp of a record: `(stream, seq)`, or why the record has none.
pub fn read<H: Headers>(headers: Option<&H>) -> Result<(i32, i64), String> {
    let (mut stream, mut seq) = (None, None);
    if let Some(headers) = headers {
        for header in headers.iter() {
            let slot = match header.key {
                STREAM_HEADER => &mut stream,
                SEQ_HEADER => &mut seq,
                _ => continue,
            };
            *slot = header.value.and_then(|v| std::str::from_utf8(v).ok());
        }
    }
    let stream: i32 = stream
        .ok_or_else(|| format!("no {STREAM_HEADER} header: not published by an outbox relay"))?
        .parse()
        .ok()
        .filter(|s| *s >= 0)
        .ok_or_else(|| format!("{STREAM_HEADER} is not a partition number"))?;
    let seq: i64 = seq
        .ok_or_else(|| format!("no {SEQ_HEADER} header: not published by an outbox relay"))?
        .parse()
        .ok()
        .filter(|s| *s >= 1)
        .ok_or_else(|| format!("{SEQ_HEADER} is not a number from 1"))?;
    Ok((stream, seq))
}

/// The partition of `key` among `partitions`, as Kafka's Java clients choose it
/// (`murmur2(key) & 0x7fffffff % partitions`), so that every producer of one key agrees.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Kafka's 32-bit murmur2 (seed `0x9747b28c`).
fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, byte) in rest.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// What a consumer group has seen of one (topic, stream): the highest sequence number applied
/// and the missing numbers below it, as inclusive ranges in ascending order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    last: i64,
    gaps: Vec<(i64, i64)>,
}

impl Seen {
    /// Rebuilds the state from its stored form: the highest number and the gaps flattened as
    /// `[from, to, from, to, ...]`.
    pub fn from_stored(last: i64, gaps: &[i64]) -> Self {
        Self {
            last,
            gaps: gaps.chunks_exact(2).map(|g| (g[0], g[1])).collect(),
        }
    }

    /// The highest number applied (0: none).
    pub fn last(&self) -> i64 {
        self.last
    }

    /// The gaps flattened for storage (see [`Seen::from_stored`]).
    pub fn stored_gaps(&self) -> Vec<i64> {
        self.gaps
            .iter()
            .flat_map(|(from, to)| [*from, *to])
            .collect()
    }

    /// How many numbers below the highest have not been seen.
    pub fn missing(&self) -> i64 {
        self.gaps.iter().map(|(from, to)| to - from + 1).sum()
    }

    /// Takes note of `seq`; answers whether it is new (to be applied) or a copy.
    pub fn admit(&mut self, seq: i64) -> bool {
        if seq > self.last {
            if seq > self.last + 1 {
                self.gaps.push((self.last + 1, seq - 1));
                if self.gaps.len() > MAX_GAPS {
                    self.gaps.remove(0);
                }
            }
            self.last = seq;
            return true;
        }
        // Gaps are disjoint and ascending: the only candidate is the last one starting at or
        // below `seq`.
        let index = self.gaps.partition_point(|(from, _)| *from <= seq);
        let Some(i) = index.checked_sub(1) else {
            return false;
        };
        let (from, to) = self.gaps[i];
        if seq > to {
            return false;
        }
        match (seq == from, seq == to) {
            (true, true) => {
                self.gaps.remove(i);
            }
            (true, false) => self.gaps[i].0 = seq + 1,
            (false, true) => self.gaps[i].1 = seq - 1,
            (false, false) => {
                self.gaps[i].1 = seq - 1;
                self.gaps.insert(i + 1, (seq + 1, to));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// The partitioner is Kafka's: the reference values of its murmur2 test.
    fn murmur2_matches_kafka() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data), want, "{}", String::from_utf8_lossy(data));
        }
        for n in 1..=12 {
            let p = partition_for(b"01a211ea-df9b-773b-a63c-b27bf40f51a5", n);
            assert!((0..n).contains(&p));
        }
    }

    #[test]
    /// In order, every number is new once; copies of any of them are not.
    fn in_order_numbers_are_new_once() {
        let mut seen = Seen::default();
        assert!((1..=5).all(|s| seen.admit(s)));
        assert!((1..=5).all(|s| !seen.admit(s)));
        assert_eq!((seen.last(), seen.missing()), (5, 0));
    }

    #[test]
    /// A number overtaken by later ones is remembered as missing and applied once when it
    /// arrives; its copies and the copies of its neighbours are not.
    fn late_numbers_fill_their_gaps_once() {
        let mut seen = Seen::default();
        assert!(seen.admit(1));
        assert!(seen.admit(7));
        assert_eq!(seen.missing(), 5);
        for late in [4, 2, 6, 3, 5] {
            assert!(seen.admit(late), "{late} arrives late");
            assert!(!seen.admit(late), "{late} again");
        }
        assert_eq!(seen.missing(), 0);
        assert!(!seen.admit(1) && !seen.admit(7) && !seen.admit(0));
    }

    #[test]
    /// The stored form round-trips, gaps included.
    fn stored_form_round_trips() {
        let mut seen = Seen::default();
        for s in [3, 9, 5] {
            seen.admit(s);
        }
        let stored = seen.stored_gaps();
        assert_eq!(stored, [1, 2, 4, 4, 6, 8]);
        let back = Seen::from_stored(seen.last(), &stored);
        assert_eq!(back, seen);
    }

    #[test]
    /// Headers written by the relay read back; records without them, or with garbage, are
    /// refused with a reason.
    fn headers_round_trip_and_garbage_is_refused() {
        assert_eq!(read(Some(&headers(4, 77))), Ok((4, 77)));
        assert!(read::<OwnedHeaders>(None).is_err());
        let bad = OwnedHeaders::new()
            .insert(Header {
                key: STREAM_HEADER,
                value: Some("1"),
            })
            .insert(Header {
                key: SEQ_HEADER,
                value: Some("0"),
            });
        assert!(read(Some(&bad)).is_err());
    }
}
