//! Group encoding: sensitive feature columns (strings) to dense integer group codes.
//!
//! Each column is encoded once (a hash lookup per value); intersections of several columns are
//! mixed-radix combinations of the per-column codes, compacted to the combinations that occur
//! and renumbered in lexicographic order of their values (the order of fairlearn's
//! `MetricFrame.by_group` index).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::Serialize;

use crate::AiError;

/// One sensitive feature column: a name and one value per row.
#[derive(Debug, Clone, Copy)]
pub struct SensitiveFeature<'a, S> {
    /// Column name (used in group keys, privileged-group conditions and errors).
    pub name: &'a str,
    /// One value per row.
    pub values: &'a [S],
}

impl<'a, S: AsRef<str>> SensitiveFeature<'a, S> {
    /// A named column.
    pub fn new(name: &'a str, values: &'a [S]) -> Self {
        SensitiveFeature { name, values }
    }
}

/// The values identifying one group: one entry per sensitive feature, in feature order.
///
/// With several sensitive features a group is an intersection (fairlearn's MultiIndex rows).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct GroupKey(pub Vec<String>);

impl GroupKey {
    /// The per-feature values.
    pub fn values(&self) -> &[String] {
        &self.0
    }
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [one] => f.write_str(one),
            many => write!(f, "({})", many.join(", ")),
        }
    }
}

/// FNV-1a: a fast, deterministic hasher for the short category strings (not DoS-resistant,
/// which does not matter for encoding one's own columns).
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// Rows encoded to dense group codes `0..keys.len()`.
#[derive(Debug, Clone)]
pub struct EncodedGroups {
    /// Sensitive feature names, in order.
    pub feature_names: Vec<String>,
    /// Group keys, sorted; code `i` is `keys[i]`.
    pub keys: Vec<GroupKey>,
    /// Group code of every row.
    pub codes: Vec<u32>,
}

/// Largest mixed-radix code space indexed by a dense table (else a hash map is used).
const DENSE_LIMIT: u64 = 1 << 22;

/// Encodes one column to codes in first-seen order, returning (codes, labels).
fn encode_column<S: AsRef<str>>(values: &[S]) -> (Vec<u32>, Vec<String>) {
    let mut map: FnvMap<&str, u32> = FnvMap::default();
    let mut labels: Vec<&str> = Vec::new();
    let mut codes = Vec::with_capacity(values.len());
    let mut last: Option<(&str, u32)> = None;
    for v in values {
        let s = v.as_ref();
        // Sorted or clustered columns repeat the previous value often: skip the hash.
        let code = match last {
            Some((p, c)) if p == s => c,
            _ => {
                let next = labels.len() as u32;
                let c = *map.entry(s).or_insert_with(|| {
                    labels.push(s);
                    next
                });
                last = Some((s, c));
                c
            }
        };
        codes.push(code);
    }
    // Renumber in sorted label order.
    let mut order: Vec<u32> = (0..labels.len() as u32).collect();
    order.sort_by(|a, b| labels[*a as usize].cmp(labels[*b as usize]));
    let mut rank = vec![0u32; labels.len()];
    for (r, old) in order.iter().enumerate() {
        rank[*old as usize] = r as u32;
    }
    for c in &mut codes {
        *c = rank[*c as usize];
    }
    let sorted = order
        .iter()
        .map(|o| labels[*o as usize].to_owned())
        .collect();
    (codes, sorted)
}

/// Encodes the sensitive columns of `n_rows` rows to group codes (intersections when there are
/// several columns).
pub fn encode_groups<S: AsRef<str>>(
    features: &[SensitiveFeature<'_, S>],
    n_rows: usize,
) -> Result<EncodedGroups, AiError> {
    if features.is_empty() {
        return Err(AiError::InvalidArgument(
            "at least one sensitive feature is required".into(),
        ));
    }
    for f in features {
        if f.values.len() != n_rows {
            return Err(AiError::LengthMismatch {
                column: f.name.to_owned(),
                expected: n_rows,
                got: f.values.len(),
            });
        }
    }
    let columns: Vec<(Vec<u32>, Vec<String>)> =
        features.iter().map(|f| encode_column(f.values)).collect();
    let feature_names = features.iter().map(|f| f.name.to_owned()).collect();
    let columns = match <[(Vec<u32>, Vec<String>); 1]>::try_from(columns) {
        Ok([(codes, labels)]) => {
            let keys = labels.into_iter().map(|l| GroupKey(vec![l])).collect();
            return Ok(EncodedGroups {
                feature_names,
                keys,
                codes,
            });
        }
        Err(columns) => columns,
    };
    // Mixed radix: the first feature is the most significant digit, so numeric order of the
    // combined code is the lexicographic order of the (sorted) per-feature labels.
    let radices: Vec<u64> = columns.iter().map(|(_, l)| l.len() as u64).collect();
    let space = radices
        .iter()
        .try_fold(1u64, |acc, r| acc.checked_mul(*r))
        .ok_or_else(|| AiError::InvalidArgument("too many group combinations".into()))?;
    let mut combined = vec![0u64; n_rows];
    for (col, radix) in columns.iter().zip(&radices) {
        for (c, code) in combined.iter_mut().zip(&col.0) {
            *c = *c * radix + u64::from(*code);
        }
    }
    let decode = |mut code: u64| -> GroupKey {
        let mut vals = vec![String::new(); columns.len()];
        for (i, (col, radix)) in columns.iter().zip(&radices).enumerate().rev() {
            vals[i] = col.1[(code % radix) as usize].clone();
            code /= radix;
        }
        GroupKey(vals)
    };
    let mut codes = vec![0u32; n_rows];
    let keys: Vec<GroupKey>;
    if space <= DENSE_LIMIT {
        let mut seen = vec![false; space as usize];
        for c in &combined {
            seen[*c as usize] = true;
        }
        let mut remap = vec![u32::MAX; space as usize];
        let mut k = Vec::new();
        for (code, s) in seen.iter().enumerate() {
            if *s {
                remap[code] = k.len() as u32;
                k.push(decode(code as u64));
            }
        }
        for (out, c) in codes.iter_mut().zip(&combined) {
            *out = remap[*c as usize];
        }
        keys = k;
    } else {
        let mut distinct: Vec<u64> = combined.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let remap: FnvMap<u64, u32> = distinct
            .iter()
            .enumerate()
            .map(|(i, c)| (*c, i as u32))
            .collect();
        for (out, c) in codes.iter_mut().zip(&combined) {
            // Infallible: `remap` holds every distinct value of `combined`.
            *out = remap[c];
        }
        keys = distinct.into_iter().map(decode).collect();
    }
    Ok(EncodedGroups {
        feature_names,
        keys,
        codes,
    })
}
