//! A column's values as the drift analysis holds them: in runs as read, each
//! either plain `f32`s or, when the run has at most [`CODED_MAX`] distinct
//! values (flags, categories, small counts), one byte per value into a small
//! dictionary.
//!
//! A window of millions of rows is held in memory between reading and
//! comparing; dictionary runs take a quarter of the memory, and counting
//! them is a histogram of bytes instead of a search per value.

/// Most distinct values a dictionary run holds.
pub const CODED_MAX: usize = 16;

/// The key values are compared by: the bits, with −0 as 0 (−0 + 0 = +0).
#[inline]
pub(crate) fn key(v: f32) -> u32 {
    (v + 0.0).to_bits()
}

/// A borrowed run of values.
#[derive(Clone, Copy, Debug)]
pub enum Chunk<'a> {
    /// Every value.
    Plain(&'a [f32]),
    /// `dict[codes[i]]` is value `i`; every entry of `dict` occurs.
    Coded {
        /// The distinct values, in order of first occurrence.
        dict: &'a [f32],
        /// One index into `dict` per value.
        codes: &'a [u8],
    },
}

impl Chunk<'_> {
    /// Values in the run.
    pub fn len(&self) -> usize {
        match self {
            Chunk::Plain(v) => v.len(),
            Chunk::Coded { codes, .. } => codes.len(),
        }
    }

    /// Whether the run is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How often each dictionary entry occurs in `codes`.
pub(crate) fn code_counts(codes: &[u8]) -> [u64; CODED_MAX] {
    // Four interleaved tallies, so consecutive equal codes do not wait on
    // each other's increments.
    let mut t = [[0u64; CODED_MAX]; 4];
    let quads = codes.chunks_exact(4);
    let rest = quads.remainder();
    for q in quads {
        for (lane, &c) in t.iter_mut().zip(q) {
            lane[usize::from(c) % CODED_MAX] += 1;
        }
    }
    for &c in rest {
        t[0][usize::from(c) % CODED_MAX] += 1;
    }
    std::array::from_fn(|i| t.iter().map(|lane| lane[i]).sum())
}

/// An owned run of values.
#[derive(Debug, Clone, PartialEq)]
pub enum Held {
    /// Every value.
    Plain(Vec<f32>),
    /// A dictionary and one code per value (see [`Chunk::Coded`]).
    Coded {
        /// The distinct values.
        dict: Vec<f32>,
        /// One index into `dict` per value.
        codes: Vec<u8>,
    },
}

impl Held {
    /// `values` as a dictionary run when they have at most [`CODED_MAX`]
    /// distinct values (−0 counted as 0), else as they are.
    pub fn encode(values: Vec<f32>) -> Held {
        match dictionary(&values) {
            Some((dict, codes)) => Held::Coded { dict, codes },
            None => Held::Plain(values),
        }
    }

    /// The run borrowed.
    pub fn view(&self) -> Chunk<'_> {
        match self {
            Held::Plain(v) => Chunk::Plain(v),
            Held::Coded { dict, codes } => Chunk::Coded { dict, codes },
        }
    }

    /// Values in the run.
    pub fn len(&self) -> usize {
        self.view().len()
    }

    /// Whether the run is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Block of values matched against the dictionary at once.
const BLOCK: usize = 64;

/// The dictionary and codes of `values`, or `None` past [`CODED_MAX`]
/// distinct values (a continuous column gives up within its first block).
fn dictionary(values: &[f32]) -> Option<(Vec<f32>, Vec<u8>)> {
    let mut keys: Vec<u32> = Vec::with_capacity(CODED_MAX);
    let mut dict: Vec<f32> = Vec::with_capacity(CODED_MAX);
    let mut codes: Vec<u8> = Vec::new();
    for block in values.chunks(BLOCK) {
        let n = block.len();
        let mut ks = [0u32; BLOCK];
        for (k, &v) in ks.iter_mut().zip(block) {
            *k = key(v);
        }
        let (mut cs, mut matched) = ([0u8; BLOCK], [false; BLOCK]);
        // Each known value marks its positions in one pass the compiler
        // vectorises; a value seen for the first time joins the dictionary.
        for (s, &k) in keys.iter().enumerate() {
            mark(&ks[..n], k, s as u8, &mut cs, &mut matched);
        }
        while let Some(i) = matched[..n].iter().position(|&m| !m) {
            if keys.len() == CODED_MAX {
                return None;
            }
            let s = keys.len() as u8;
            keys.push(ks[i]);
            dict.push(block[i]);
            mark(&ks[..n], ks[i], s, &mut cs, &mut matched);
        }
        if codes.capacity() == 0 {
            codes.reserve_exact(values.len());
        }
        codes.extend_from_slice(&cs[..n]);
    }
    Some((dict, codes))
}

#[inline]
fn mark(ks: &[u32], k: u32, code: u8, cs: &mut [u8; BLOCK], matched: &mut [bool; BLOCK]) {
    for ((c, m), &x) in cs.iter_mut().zip(matched.iter_mut()).zip(ks) {
        let hit = x == k;
        *c |= u8::from(hit) * code;
        *m |= hit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(h: &Held) -> Vec<f32> {
        match h {
            Held::Plain(v) => v.clone(),
            Held::Coded { dict, codes } => codes.iter().map(|&c| dict[usize::from(c)]).collect(),
        }
    }

    #[test]
    fn few_values_are_coded_and_decode_to_the_same_bits() {
        let v: Vec<f32> = (0..1000).map(|i| [0.0, 1.0, -0.0, 2.5, f32::NAN][(i * 7) % 5]).collect();
        let h = Held::encode(v.clone());
        let Held::Coded { dict, codes } = &h else { panic!("coded: {h:?}") };
        // −0 is 0; NaN is a value of its own.
        assert_eq!(dict.len(), 4);
        assert_eq!(codes.len(), 1000);
        let back = decode(&h);
        assert!(v.iter().zip(&back).all(|(a, b)| key(*a) == key(*b)));
        let counts = code_counts(codes);
        assert_eq!(counts.iter().sum::<u64>(), 1000);
        // In order of first occurrence: 0 (with −0), NaN, 1, 2.5.
        assert!(dict[1].is_nan() && (dict[0], dict[2], dict[3]) == (0.0, 1.0, 2.5));
        assert_eq!(counts[..4], [400, 200, 200, 200]);
    }

    #[test]
    fn sixteen_values_are_coded_seventeen_are_not() {
        let v16: Vec<f32> = (0..5000).map(|i| (i % 16) as f32).collect();
        assert!(matches!(Held::encode(v16.clone()), Held::Coded { .. }));
        assert_eq!(decode(&Held::encode(v16.clone())), v16);
        // The 17th value first appears late, after many full blocks.
        let mut v17 = v16.clone();
        v17[4321] = 99.0;
        assert_eq!(Held::encode(v17.clone()), Held::Plain(v17));
        assert_eq!(Held::encode(Vec::new()).len(), 0);
    }
}
