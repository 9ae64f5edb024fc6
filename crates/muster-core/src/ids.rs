//! Identifiers: time-ordered UUID v7 for envelopes, tasks and runs, and the stable
//! hashes ids and digests are derived from.
//!
//! Owns id generation for the whole runtime. Live runtimes draw ids from the wall clock and
//! a fast RNG; a simulation draws them from its virtual clock and a seeded counter, so the
//! same seed produces the same ids and therefore the same journal, byte for byte (G6).
//!
//! Also owns the one FNV-1a 64 ([`Fnv1a`], [`fnv1a64`]) and the one canonical JSON writer
//! ([`canonical_json`]) of the workspace: the simulator's seeds and determinism digest and
//! the cluster's contract digests are built from them, so their output must never change.
//! It must not know anything of the runtime.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use uuid::Uuid;

/// The id of a delegated task.
pub type TaskId = Uuid;

/// Where new ids come from.
#[derive(Debug)]
pub enum IdGen {
    /// UUID v7 from the system clock and a fast RNG: unique across processes.
    Random,
    /// UUID v7 whose timestamp is the caller's (virtual) time and whose random bits are a
    /// seeded counter: reproducible for the same seed and the same sequence of calls.
    Seeded {
        /// Mixed into every id so two seeds give two id sequences.
        seed: u64,
        /// Incremented for every id.
        counter: AtomicU64,
    },
}

impl IdGen {
    /// A seeded generator (for simulations and deterministic tests).
    pub fn seeded(seed: u64) -> Self {
        IdGen::Seeded {
            seed,
            counter: AtomicU64::new(0),
        }
    }

    /// A new id. `now_ms` is the runtime clock in Unix milliseconds (virtual or real).
    pub fn next(&self, now_ms: u64) -> Uuid {
        match self {
            IdGen::Random => Uuid::now_v7(),
            IdGen::Seeded { seed, counter } => {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let mixed = splitmix64(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let mut bytes = [0u8; 10];
                bytes[..2].copy_from_slice(&(n as u16).to_be_bytes());
                bytes[2..].copy_from_slice(&mixed.to_be_bytes());
                uuid::Builder::from_unix_timestamp_millis(now_ms, &bytes).into_uuid()
            }
        }
    }
}

/// The splitmix64 finaliser: a cheap, well-mixed bijection on u64, used wherever a
/// deterministic id or draw is derived from a seed (the simulator, trace ids).
///
/// # Example
/// ```
/// use muster_core::ids::splitmix64;
///
/// assert_eq!(splitmix64(1), splitmix64(1));
/// assert_ne!(splitmix64(1), splitmix64(2));
/// ```
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a's 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a's 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bits: a stable hash with no dependency, fed in pieces (or through
/// `io::Write`). Unlike the standard library's hasher it never changes between releases,
/// so seeds and digests derived from it stay the same.
///
/// # Example
/// ```
/// use muster_core::ids::{fnv1a64, Fnv1a};
/// let mut h = Fnv1a::default();
/// h.update(b"tester");
/// h.update(b"#0");
/// assert_eq!(h.finish(), fnv1a64(b"tester#0"));
/// // FNV-1a's published test vector.
/// assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(FNV_OFFSET)
    }
}

impl Fnv1a {
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(FNV_PRIME);
        }
        self.0 = h;
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Write for Fnv1a {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// FNV-1a 64 of `bytes` in one call.
///
/// # Example
/// ```
/// use muster_core::ids::fnv1a64;
/// assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
/// assert_ne!(fnv1a64(b"tester#0"), fnv1a64(b"tester#1"));
/// ```
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a::default();
    h.update(bytes);
    h.finish()
}

/// `v` as canonical JSON: no whitespace, object keys sorted (by their UTF-8 bytes) at
/// every depth, whatever order the document was written in; strings and numbers as
/// `serde_json` writes them. Two documents that are equal as JSON give the same text.
///
/// # Example
/// ```
/// use muster_core::ids::canonical_json;
/// use serde_json::json;
/// let a = json!({"b": 1, "a": {"y": [1, 2], "x": null}});
/// assert_eq!(canonical_json(&a), r#"{"a":{"x":null,"y":[1,2]},"b":1}"#);
/// ```
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical_json(v, &mut out);
    out
}

/// Appends `v` as canonical JSON (see [`canonical_json`]) to `out`.
///
/// # Example
/// ```
/// use muster_core::ids::write_canonical_json;
/// use serde_json::json;
/// let mut out = String::from("digest of ");
/// write_canonical_json(&json!({"z": true, "a": "s"}), &mut out);
/// assert_eq!(out, r#"digest of {"a":"s","z":true}"#);
/// ```
pub fn write_canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical_json(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical_json(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        let mut h = Fnv1a::default();
        write!(h, "foo").unwrap();
        h.update(b"bar");
        assert_eq!(h.finish(), fnv1a64(b"foobar"));
    }

    #[test]
    fn canonical_json_ignores_key_order() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a": {"x": null, "y": [1, 2]}, "b": 1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"x":null,"y":[1,2]},"b":1}"#);
    }

    #[test]
    fn canonical_json_escapes_keys_and_strings_as_serde_json_does() {
        let v = json!({"q\"k": "line\nbreak", "n": [1.5, -2, true, null], "e": {}});
        assert_eq!(
            canonical_json(&v),
            r#"{"e":{},"n":[1.5,-2,true,null],"q\"k":"line\nbreak"}"#
        );
    }

    #[test]
    fn seeded_ids_repeat_for_the_same_seed_and_differ_across_seeds() {
        let a: Vec<_> = (0..5).map(|_| 0).collect();
        let g1 = IdGen::seeded(7);
        let g2 = IdGen::seeded(7);
        let g3 = IdGen::seeded(8);
        let s1: Vec<_> = a.iter().map(|_| g1.next(1000)).collect();
        let s2: Vec<_> = a.iter().map(|_| g2.next(1000)).collect();
        let s3: Vec<_> = a.iter().map(|_| g3.next(1000)).collect();
        assert_eq!(s1, s2);
        assert_ne!(s1, s3);
        assert_eq!(s1[0].get_version_num(), 7);
    }
}
