//! Incremental aggregations.
//!
//! An [`Aggregator`] folds values into a small accumulator (`add`), combines two accumulators
//! (`merge`, used to combine panes, merge sessions and run two-stack sliding aggregation) and
//! turns an accumulator into a result. Windows store accumulators, never the values.
//!
//! Laws every aggregator must satisfy (the window operators rely on them):
//! - `merge` is associative and `init()` is its identity;
//! - `merge` is commutative, and `add` is compatible with it:
//!   `add(merge(a, b), v) == merge(add(a, v), b)`. Records reach windows in arrival order,
//!   which is not event-time order, so order-sensitive folds ("last value") are not
//!   aggregators in this sense.
//!
//! Floating-point sums are associative only up to rounding: results can differ in the last
//! bits depending on how panes were combined (and so on batching). Integer-valued inputs give
//! exact results.
//!
//! Built in: [`Count`], [`Sum`], [`Mean`], [`Min`], [`Max`], [`DistinctApprox`] (HyperLogLog),
//! and [`AggregateFn`] for user-defined aggregations from closures. Implement the trait
//! directly for anything else.

mod hll;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub use hll::{DistinctApprox, HllSketch};

/// An incremental, mergeable aggregation of values of type `V`.
pub trait Aggregator<V>: Send {
    /// The accumulator. Keep it small (ideally `Copy`): windows keep one per pane per key.
    type Acc: Clone + Serialize + DeserializeOwned + Send + 'static;
    /// The result type.
    type Out;

    /// The empty accumulator (identity of [`Aggregator::merge`]).
    fn init(&self) -> Self::Acc;
    /// Folds one value into `acc`.
    fn add(&self, acc: &mut Self::Acc, value: &V);
    /// Folds `other` into `acc`.
    fn merge(&self, acc: &mut Self::Acc, other: &Self::Acc);
    /// The result for `acc`.
    fn result(&self, acc: &Self::Acc) -> Self::Out;
    /// Removes `other` (previously merged or added into `acc`) from `acc`, for invertible
    /// aggregations; returns `false`, leaving `acc` unchanged, when the aggregation is not
    /// invertible (the default).
    fn subtract(&self, acc: &mut Self::Acc, other: &Self::Acc) -> bool {
        let _ = (acc, other);
        false
    }
}

/// Numbers that [`Sum`] and [`Mean`] can fold (converted to `f64`).
pub trait AsF64 {
    /// The value as `f64` (integers above 2^53 lose precision).
    fn as_f64(&self) -> f64;
}

macro_rules! as_f64 {
    ($($t:ty),*) => {$(
        impl AsF64 for $t {
            #[inline]
            fn as_f64(&self) -> f64 {
                *self as f64
            }
        }
    )*};
}
as_f64!(f64, f32, i64, i32, i16, i8, u64, u32, u16, u8, usize, isize);

/// Number of values. Invertible.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count;

impl<V> Aggregator<V> for Count {
    type Acc = u64;
    type Out = u64;
    #[inline]
    fn init(&self) -> u64 {
        0
    }
    #[inline]
    fn add(&self, acc: &mut u64, _value: &V) {
        *acc += 1;
    }
    #[inline]
    fn merge(&self, acc: &mut u64, other: &u64) {
        *acc += *other;
    }
    #[inline]
    fn result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn subtract(&self, acc: &mut u64, other: &u64) -> bool {
        *acc = acc.saturating_sub(*other);
        true
    }
}

/// Sum of numeric values as `f64`. Invertible (up to floating-point rounding).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sum;

impl<V: AsF64> Aggregator<V> for Sum {
    type Acc = f64;
    type Out = f64;
    #[inline]
    fn init(&self) -> f64 {
        0.0
    }
    #[inline]
    fn add(&self, acc: &mut f64, value: &V) {
        *acc += value.as_f64();
    }
    #[inline]
    fn merge(&self, acc: &mut f64, other: &f64) {
        *acc += *other;
    }
    #[inline]
    fn result(&self, acc: &f64) -> f64 {
        *acc
    }
    fn subtract(&self, acc: &mut f64, other: &f64) -> bool {
        *acc -= *other;
        true
    }
}

/// Accumulator of [`Mean`]: a sum and a count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MeanAcc {
    /// Sum of the values.
    pub sum: f64,
    /// Number of values.
    pub count: u64,
}

/// Arithmetic mean of numeric values. Invertible (up to rounding). The mean of no values is
/// `NaN`; windows never emit empty results, so it does not reach outputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mean;

impl<V: AsF64> Aggregator<V> for Mean {
    type Acc = MeanAcc;
    type Out = f64;
    #[inline]
    fn init(&self) -> MeanAcc {
        MeanAcc::default()
    }
    #[inline]
    fn add(&self, acc: &mut MeanAcc, value: &V) {
        acc.sum += value.as_f64();
        acc.count += 1;
    }
    #[inline]
    fn merge(&self, acc: &mut MeanAcc, other: &MeanAcc) {
        acc.sum += other.sum;
        acc.count += other.count;
    }
    #[inline]
    fn result(&self, acc: &MeanAcc) -> f64 {
        if acc.count == 0 {
            f64::NAN
        } else {
            acc.sum / acc.count as f64
        }
    }
    fn subtract(&self, acc: &mut MeanAcc, other: &MeanAcc) -> bool {
        acc.sum -= other.sum;
        acc.count = acc.count.saturating_sub(other.count);
        true
    }
}

/// Smallest value (`None` for no values). Values compare with `PartialOrd`; a value that is
/// not comparable (NaN) never replaces the current minimum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Min;

impl<V> Aggregator<V> for Min
where
    V: Copy + PartialOrd + Serialize + DeserializeOwned + Send + 'static,
{
    type Acc = Option<V>;
    type Out = Option<V>;
    #[inline]
    fn init(&self) -> Option<V> {
        None
    }
    #[inline]
    fn add(&self, acc: &mut Option<V>, value: &V) {
        match acc {
            Some(m) => {
                if *value < *m {
                    *m = *value;
                }
            }
            None => {
                // A value not comparable with itself (NaN) is skipped.
                if value.partial_cmp(value).is_some() {
                    *acc = Some(*value);
                }
            }
        }
    }
    #[inline]
    fn merge(&self, acc: &mut Option<V>, other: &Option<V>) {
        if let Some(v) = other {
            self.add(acc, v);
        }
    }
    #[inline]
    fn result(&self, acc: &Option<V>) -> Option<V> {
        *acc
    }
}

/// Largest value (`None` for no values). Values compare with `PartialOrd`; a value that is
/// not comparable (NaN) never replaces the current maximum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Max;

impl<V> Aggregator<V> for Max
where
    V: Copy + PartialOrd + Serialize + DeserializeOwned + Send + 'static,
{
    type Acc = Option<V>;
    type Out = Option<V>;
    #[inline]
    fn init(&self) -> Option<V> {
        None
    }
    #[inline]
    fn add(&self, acc: &mut Option<V>, value: &V) {
        match acc {
            Some(m) => {
                if *value > *m {
                    *m = *value;
                }
            }
            None => {
                // A value not comparable with itself (NaN) is skipped.
                if value.partial_cmp(value).is_some() {
                    *acc = Some(*value);
                }
            }
        }
    }
    #[inline]
    fn merge(&self, acc: &mut Option<V>, other: &Option<V>) {
        if let Some(v) = other {
            self.add(acc, v);
        }
    }
    #[inline]
    fn result(&self, acc: &Option<V>) -> Option<V> {
        *acc
    }
}

/// A user-defined aggregation from four closures: `init`, `add`, `merge` and `result`.
/// Statically dispatched; the closures must obey the laws in the [module docs](self).
///
/// ```
/// use attest_stream::agg::{AggregateFn, Aggregator};
/// // Sum of squares.
/// let agg = AggregateFn::new(
///     || 0.0f64,
///     |acc: &mut f64, v: &f64| *acc += v * v,
///     |acc: &mut f64, other: &f64| *acc += other,
///     |acc: &f64| *acc,
/// );
/// let mut acc = agg.init();
/// agg.add(&mut acc, &3.0);
/// assert_eq!(agg.result(&acc), 9.0);
/// ```
#[derive(Clone)]
pub struct AggregateFn<I, A, M, R> {
    init: I,
    add: A,
    merge: M,
    result: R,
}

impl<I, A, M, R> std::fmt::Debug for AggregateFn<I, A, M, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AggregateFn")
    }
}

impl<I, A, M, R> AggregateFn<I, A, M, R> {
    /// An aggregation from its four parts.
    pub fn new(init: I, add: A, merge: M, result: R) -> Self {
        Self {
            init,
            add,
            merge,
            result,
        }
    }
}

impl<V, Acc, Out, I, A, M, R> Aggregator<V> for AggregateFn<I, A, M, R>
where
    Acc: Clone + Serialize + DeserializeOwned + Send + 'static,
    I: Fn() -> Acc + Send,
    A: Fn(&mut Acc, &V) + Send,
    M: Fn(&mut Acc, &Acc) + Send,
    R: Fn(&Acc) -> Out + Send,
{
    type Acc = Acc;
    type Out = Out;
    #[inline]
    fn init(&self) -> Acc {
        (self.init)()
    }
    #[inline]
    fn add(&self, acc: &mut Acc, value: &V) {
        (self.add)(acc, value)
    }
    #[inline]
    fn merge(&self, acc: &mut Acc, other: &Acc) {
        (self.merge)(acc, other)
    }
    #[inline]
    fn result(&self, acc: &Acc) -> Out {
        (self.result)(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold<V, A: Aggregator<V>>(agg: &A, values: &[V]) -> A::Acc {
        let mut acc = agg.init();
        for v in values {
            agg.add(&mut acc, v);
        }
        acc
    }

    #[test]
    fn builtins_fold_merge_and_subtract() {
        let xs = [3.0f64, -1.0, 4.0, 1.5];
        let ys = [10.0f64, 2.0];
        let (mut a, b) = (fold(&Mean, &xs), fold(&Mean, &ys));
        Aggregator::<f64>::merge(&Mean, &mut a, &b);
        assert_eq!(Aggregator::<f64>::result(&Mean, &a), 19.5 / 6.0);
        assert!(Aggregator::<f64>::subtract(&Mean, &mut a, &b));
        assert_eq!(Aggregator::<f64>::result(&Mean, &a), 7.5 / 4.0);

        assert_eq!(fold(&Count, &xs), 4);
        assert_eq!(fold(&Sum, &[1i64, 2, 3]), 6.0);
        assert_eq!(fold(&Min, &xs), Some(-1.0));
        assert_eq!(fold(&Max, &xs), Some(4.0));
        assert_eq!(fold(&Min, &[7u32, 3, 9]), Some(3));
        let mut m = fold(&Max, &[1i64]);
        Aggregator::<i64>::merge(&Max, &mut m, &fold(&Max, &[5i64, 2]));
        assert_eq!(m, Some(5));
        assert!(Aggregator::<i64>::result(&Mean, &MeanAcc::default()).is_nan());
        let mut acc = fold(&Min, &[2.0f64]);
        Aggregator::<f64>::add(&Min, &mut acc, &f64::NAN);
        assert_eq!(acc, Some(2.0), "NaN never replaces a minimum");
        assert!(!Aggregator::<f64>::subtract(&Min, &mut acc, &Some(2.0)));
    }
}
